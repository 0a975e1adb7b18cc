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
//! a new file (`busline-monitor-<pid>-<random>.out` in the temporary
//! directory, removed on exit if nothing was written): the 1 s
//! summaries, the logger's lines (without `--log-file`), `[ALERT]` lines and
//! warnings land there, not on the screen. The view draws on its own copy of
//! the terminal. When it ends, stdout and stderr are put back and the file's
//! path is printed.

pub mod draw;
pub mod input;
pub mod sort;
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
    /// Set when the view failed (an error or a panic) and so stopped it.
    failed: Arc<AtomicBool>,
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
        let failed = Arc::new(AtomicBool::new(false));
        let stopper = StopOnDrop {
            runtime,
            failed: failed.clone(),
        };
        // (If the thread cannot start, `redirect` is dropped: restored.)
        let thread = std::thread::Builder::new()
            .name("busline-tui".into())
            .spawn(move || {
                // `q`, a failed view, a panic: the monitor stops either way.
                let stopper = stopper;
                match run(screen, &shared, &bus, &tokio, web, &flag) {
                    Ok(true) => quitting.store(true, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(e) => {
                        stopper.failed.store(true, Ordering::SeqCst);
                        eprintln!("[monitor] the terminal view failed: {e:#}");
                    }
                }
            })
            .context("cannot start the terminal view's thread")?;
        Ok(Tui {
            stop,
            quit,
            failed,
            thread: Some(thread),
            redirect: Some(redirect),
        })
    }

    /// Ends the view (if `q` did not), restores the terminal, stdout and
    /// stderr, and says where their output went (an empty file is
    /// removed). Returns why the view stopped the monitor, if it did: `q`,
    /// or its failure.
    pub async fn finish(mut self) -> Option<&'static str> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(r) = self.redirect.take() {
            let path = r.path.clone();
            drop(r);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
            } else {
                println!(
                    "[monitor] output while the terminal view ran: {}",
                    path.display()
                );
            }
        }
        if self.failed.load(Ordering::SeqCst) {
            Some("the terminal view failed")
        } else if self.quit.load(Ordering::SeqCst) {
            Some("q in the terminal view")
        } else {
            None
        }
    }
}

/// Stops the monitor when the view's thread ends, by a panic too (then it
/// also marks the view failed).
struct StopOnDrop {
    runtime: RuntimeHandle,
    failed: Arc<AtomicBool>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.failed.store(true, Ordering::SeqCst);
        }
        self.runtime.shutdown();
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
        let entered = execute!(out, EnterAlternateScreen, cursor::Hide)
            .and_then(|_| Terminal::new(CrosstermBackend::new(out)));
        match entered {
            Ok(t) => Ok(Screen(t)),
            Err(e) => {
                // (Not in raw mode when the view cannot start.)
                let _ = terminal::disable_raw_mode();
                Err(e).context("cannot take over the terminal")
            }
        }
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
        let (file, path) = output_file()?;
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
}

impl Drop for Redirect {
    /// Puts stdout and stderr back, however the view ends.
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        let _ = rustix::stdio::dup2_stdout(&self.stdout);
        let _ = rustix::stdio::dup2_stderr(&self.stderr);
    }
}

/// A new file for the output, `busline-monitor-<pid>-<random>.out` in the
/// temporary directory, only the user's (0600), never one that was there
/// (nor a symbolic link someone left in its place).
fn output_file() -> anyhow::Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for _ in 0..16 {
        let name = format!(
            "busline-monitor-{}-{:08x}.out",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = std::env::temp_dir().join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    Err(anyhow::anyhow!(
        "cannot create an output file in {}: {last:?}",
        std::env::temp_dir().display()
    ))
}
