//! `busline monitor --tui`: a full-screen live view, redrawn in place.
//!
//! A series table (sortable: `s` cycles, `r`/`n`/`c`/`p` pick rate, name,
//! count, p99), a sparkline of the selected series' last minute, the alert
//! rules and their state, and ingest status (packets, parse errors, kernel
//! drops, scrape targets). `q` (or `Esc`, `Ctrl-C`) stops the monitor
//! cleanly, as Ctrl-C does in plain mode. See [`input`] for every key.
//!
//! State ([`state`]), drawing ([`draw`], a function per panel) and input
//! ([`input`]) are apart; this file owns the terminal.
//!
//! ## Not by default
//!
//! `--tui` (or `tui = true` in the config file) turns it on; plain lines
//! stay the default even on a terminal, so `cargo run --release` shows the
//! seed's exercise as it always did and output can be copied, piped and
//! grepped. When stdout is not a terminal `--tui` falls back to plain lines
//! with a warning.
//!
//! ## Nothing scribbles over it
//!
//! While the view owns the terminal, the process's stdout and stderr go to
//! a file (`busline-monitor-<pid>.out` in the temporary directory): the 1 s
//! summaries, the logger's lines (without `--log-file`), `[ALERT]` lines and
//! warnings land there, not on the screen. The view draws on its own copy of
//! the terminal. When it ends, stdout and stderr are put back and the file's
//! path is printed.

pub mod draw;
pub mod input;
pub mod state;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use busline::{Bus, RuntimeHandle};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use super::metric::Metric;
use super::Shared;
use state::State;

/// How often the view is redrawn without a key press.
pub const REDRAW: Duration = Duration::from_millis(500);

/// Whether the view can run here (stdout is a terminal).
pub fn possible() -> bool {
    std::io::stdout().is_terminal()
}

/// The running view; [`Tui::finish`] ends it and gives the terminal back.
pub struct Tui {
    stop: Arc<AtomicBool>,
    /// Set when the user quit (`q`), not the monitor.
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    redirect: Option<Redirect>,
}

impl Tui {
    /// Takes over the terminal and draws until `q` or [`Tui::finish`].
    pub fn start(
        shared: Arc<Shared>,
        bus: Bus<Metric>,
        runtime: RuntimeHandle,
        web: Option<String>,
    ) -> anyhow::Result<Tui> {
        let (redirect, screen) = Redirect::start()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tokio = tokio::runtime::Handle::current();
        let flag = stop.clone();
        let quit = Arc::new(AtomicBool::new(false));
        let quitting = quit.clone();
        let thread = std::thread::Builder::new()
            .name("busline-tui".into())
            .spawn(move || {
                match run(screen, &shared, &bus, &tokio, web, &flag) {
                    Ok(true) => quitting.store(true, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(e) => eprintln!("[monitor] the terminal view failed: {e:#}"),
                }
                // `q`, or a failed view: stop the monitor either way.
                runtime.shutdown();
            })
            .context("cannot start the terminal view's thread")?;
        Ok(Tui {
            stop,
            quit,
            thread: Some(thread),
            redirect: Some(redirect),
        })
    }

    /// Ends the view (if `q` did not), restores the terminal, stdout and
    /// stderr, and says where their output went. Returns whether the user
    /// quit it.
    pub async fn finish(mut self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(r) = self.redirect.take() {
            let path = r.path.clone();
            r.restore();
            println!(
                "[monitor] output while the terminal view ran: {}",
                path.display()
            );
        }
        self.quit.load(Ordering::SeqCst)
    }
}

/// The loop: draw, wait for a key or the next redraw, until told to stop
/// (`Ok(false)`) or the user quits (`Ok(true)`).
fn run(
    screen: File,
    shared: &Shared,
    bus: &Bus<Metric>,
    tokio: &tokio::runtime::Handle,
    web: Option<String>,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let mut term = Screen::enter(screen)?;
    let mut state = State::new(web);
    let mut next = Instant::now();
    let mut dirty = true;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let snapshot = tokio.block_on(shared.snapshot(bus, false));
            state.refresh(shared.series(), snapshot);
            next = Instant::now() + REDRAW;
            dirty = true;
        }
        if std::mem::take(&mut dirty) {
            term.0.draw(|f| draw::draw(f, &state))?;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait.min(Duration::from_millis(100)))? {
            match event::read()? {
                Event::Key(key) => {
                    if let Some(a) = input::action(key) {
                        if !state.apply(a) {
                            return Ok(true);
                        }
                        dirty = true;
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    Ok(false)
}

/// The terminal in raw mode on the alternate screen; restored on drop.
struct Screen(Terminal<CrosstermBackend<BufWriter<File>>>);

impl Screen {
    fn enter(out: File) -> anyhow::Result<Screen> {
        // A frame goes out in one write (ratatui flushes after each), so
        // the terminal never shows half of one.
        let mut out = BufWriter::with_capacity(1 << 16, out);
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        execute!(out, EnterAlternateScreen, cursor::Hide)?;
        let t = Terminal::new(CrosstermBackend::new(out))?;
        Ok(Screen(t))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let out = self.0.backend_mut();
        let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
        let _ = terminal::disable_raw_mode();
    }
}

/// Stdout and stderr sent to a file while the view runs.
struct Redirect {
    stdout: OwnedFd,
    stderr: OwnedFd,
    path: PathBuf,
}

impl Redirect {
    /// Sends stdout and stderr to the file; returns the terminal to draw on.
    fn start() -> anyhow::Result<(Redirect, File)> {
        let path = std::env::temp_dir().join(format!("busline-monitor-{}.out", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {} for the output", path.display()))?;
        let _ = std::io::stdout().flush();
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        let screen = File::from(stdout.try_clone()?);
        rustix::stdio::dup2_stdout(&file)?;
        rustix::stdio::dup2_stderr(&file)?;
        Ok((
            Redirect {
                stdout,
                stderr,
                path,
            },
            screen,
        ))
    }

    fn restore(self) {
        let _ = std::io::stdout().flush();
        let _ = rustix::stdio::dup2_stdout(&self.stdout);
        let _ = rustix::stdio::dup2_stderr(&self.stderr);
    }
}
