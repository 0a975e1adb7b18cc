//! Starting the monitor: the event log, the endpoints bound before anything
//! runs, the modules in their order, and the last line.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use busline::{Bus, EventStore, Runtime, StopReason};
use busline_log::LogStore;

use super::config::{MonitorArgs, Settings};
use super::metric::Metric;
use super::webhook::Webhook;
use super::{
    alerter, dashboard, logger, nats, otlp, publishers, say, scrape, series, statsd, tui, web,
    Shared,
};

fn store_len(store: &Arc<LogStore<Metric>>) -> u64 {
    let log = store.log();
    log.committed_end() - log.first_offset()
}

/// `busline monitor`.
pub fn run(args: MonitorArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    // Opening the log blocks on disk (recovery): before the runtime starts.
    let store = open_log(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("busline-monitor")
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run_async(settings, store))
}

/// Opens the event log in `--data-dir`, if there is one.
fn open_log(settings: &Settings) -> Result<Option<Arc<LogStore<Metric>>>> {
    let Some(dir) = &settings.data_dir else {
        return Ok(None);
    };
    let options = busline_log::Options {
        persist: busline_log::Persist::Fsync,
        // Retention deletes whole segments: keep them small beside the limit.
        segment_bytes: (settings.log_retention_bytes / 8).clamp(1 << 20, 64 << 20),
        retention_age: Some(settings.log_retention_age),
        retention_bytes: Some(settings.log_retention_bytes),
        ..Default::default()
    };
    match LogStore::open(dir, options) {
        Ok(store) => {
            if let Some(cut) = store.log().recovery() {
                // A write torn by a crash: never acknowledged, so never delivered.
                eprintln!(
                    "[monitor] event log {}: cut a torn write of {} bytes at offset {} in {}",
                    dir.display(),
                    cut.bytes_cut,
                    cut.offset,
                    cut.segment.display()
                );
            }
            Ok(Some(Arc::new(store)))
        }
        Err(e) => {
            let hint = match &e {
                busline_log::Error::Locked { .. } => {
                    "is another monitor running on it? Stop it, or pass another --data-dir (or --no-data-dir)"
                }
                _ if dir.exists() && !dir.is_dir() => {
                    "it is a file, not a directory: pass a directory as --data-dir (or --no-data-dir)"
                }
                _ => "`busline log verify DIR` shows what is wrong; move the directory away or pass another --data-dir (or --no-data-dir)",
            };
            anyhow::bail!(
                "cannot open the monitor's event log in {}: {e}\n  {hint}",
                dir.display()
            )
        }
    }
}

async fn run_async(settings: Settings, store: Option<Arc<LogStore<Metric>>>) -> Result<()> {
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let bus: Bus<Metric> = Bus::new();
    if let Some(store) = &store {
        // Before any module subscribes or publishes.
        let dyn_store: Arc<dyn EventStore<Metric>> = store.clone();
        bus.persist("metrics.>", dyn_store)?;
        if let Some(dir) = &settings.data_dir {
            println!(
                "[monitor] event log in {} ({} events kept)",
                dir.display(),
                store_len(store)
            );
        }
    }
    let shared = Arc::new(Shared::new(&settings));
    let endpoints = Endpoints::bind(&settings, &shared, prom)?;
    shared.set_webhook(endpoints.hook.clone());

    // Consumers first: the runtime starts modules in this order (each once
    // the one before is subscribed) and stops them in reverse, so the
    // publishers stop first and the logger drains last.
    let mut rt = Runtime::new(bus.clone());
    add_consumers(
        &mut rt,
        &settings,
        &shared,
        endpoints.hook.clone(),
        store.is_some(),
    )?;
    add_nats(&mut rt, &bus, &settings).await?;
    let web_url = add_publishers(&mut rt, &settings, &shared, endpoints);
    let handle = rt.handle();
    shared.set_runtime(Some(handle.clone()));
    println!("[monitor] running: {}", running_line(&settings));
    let timer = settings
        .duration
        .map(|d| DurationTimer::start(d, handle.clone()));
    let view = match settings.tui {
        true if tui::possible() => Some(tui::Tui::start(
            shared.clone(),
            bus.clone(),
            handle.clone(),
            web_url,
        )?),
        true => {
            eprintln!("[monitor] --tui needs a terminal on stdout: showing plain lines instead");
            None
        }
        false => None,
    };
    let started = Instant::now();
    let result = rt.run().await;
    let by_view = match view {
        Some(v) => v.finish().await,
        None => None,
    };
    let fired = match timer {
        Some(t) => t.finish().await,
        None => false,
    };
    shared.set_runtime(None);
    let stats = bus.stats();
    bus.close();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = e.report() {
                for m in &r.modules {
                    eprintln!("[monitor] module {}: {}", m.name, m.state);
                }
            }
            return Err(anyhow::anyhow!("the monitor stopped: {e}"));
        }
    };
    let why = match &report.reason {
        StopReason::Requested if by_view.is_some() => by_view.unwrap_or_default().to_owned(),
        StopReason::Requested if fired => "--duration elapsed".to_owned(),
        other => other.to_string(),
    };
    say(&format!(
        "[monitor] stopped after {:.1}s ({why}): {} events published, {} missed by the lossy dashboard, {} via the API{}",
        started.elapsed().as_secs_f64(),
        stats.published,
        stats.dropped,
        shared.ingested.load(Ordering::Relaxed),
        if report.aborted.is_empty() {
            String::new()
        } else {
            format!("; aborted at the deadline: {}", report.aborted.join(", "))
        }
    ));
    Ok(())
}

/// What listens for the outside world, bound before anything starts: a
/// busy port is an error (or, for StatsD's default port, a warning) before
/// any module runs.
struct Endpoints {
    web: Option<web::Web>,
    otlp: Option<otlp::http::OtlpListener>,
    statsd: Option<statsd::Listener>,
    hook: Option<Webhook>,
}

impl Endpoints {
    fn bind(
        settings: &Settings,
        shared: &Arc<Shared>,
        prom: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Result<Endpoints> {
        let web = match settings.web.filter(|_| settings.modules.web) {
            Some(addr) => Some(web::Web::bind(
                addr,
                web::WebConfig {
                    token: settings.token.clone(),
                    allow_host: settings.allow_host.clone(),
                    max_body: settings.max_body,
                },
                shared.clone(),
                prom,
            )?),
            None => None,
        };
        let otlp = match settings.otlp {
            Some(addr) => Some(otlp::http::OtlpListener::bind(
                addr,
                settings.token.clone(),
                shared.otlp_intake(),
            )?),
            None => None,
        };
        let statsd = match settings.statsd {
            Some(s) => statsd::Listener::bind(s.addr, s.explicit, shared.ingest.clone())?,
            None => None,
        };
        let hook = match &settings.alert_webhook {
            Some(url) => Some(Webhook::start(url.clone())?),
            None => None,
        };
        Ok(Endpoints {
            web,
            otlp,
            statsd,
            hook,
        })
    }
}

/// The logger, the dashboard and its series store, and the alerter, in that
/// order; with the event log they warm up from its last minute.
fn add_consumers(
    rt: &mut Runtime<Metric>,
    settings: &Settings,
    shared: &Arc<Shared>,
    hook: Option<Webhook>,
    warm_up: bool,
) -> Result<()> {
    let modules = settings.modules;
    if modules.logger {
        let sink = match &settings.log_file {
            Some(p) => {
                // A file that cannot be written is an error now, not a
                // logger failing (and restarting) once the monitor runs.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| {
                        format!("--log-file: cannot open {} to append", p.display())
                    })?;
                logger::Sink::File(p.clone())
            }
            None => logger::Sink::Stdout,
        };
        rt.add(logger::Logger::new(sink));
    }
    if modules.dashboard {
        let mut dash = dashboard::Dashboard::new(shared.clone(), Duration::from_secs(1));
        let mut feed =
            series::feed::SeriesFeed::new(shared.series_view.clone(), settings.max_series);
        if warm_up {
            dash = dash.warm_up();
            feed = feed.warm_up();
        }
        rt.add(dash);
        rt.add(feed);
    }
    if modules.alerter {
        let mut alert = alerter::Alerter::new(settings.alert_threshold, shared.clone(), hook)
            .rules(settings.alert_rules.clone());
        if warm_up {
            alert = alert.warm_up();
        }
        rt.add(alert);
    }
    Ok(())
}

/// With `--nats`, the bus's link to the other processes: after the
/// consumers, before the publishers.
async fn add_nats(rt: &mut Runtime<Metric>, bus: &Bus<Metric>, settings: &Settings) -> Result<()> {
    let Some(n) = &settings.nats else {
        return Ok(());
    };
    let modules = settings.modules;
    let cfg = nats::config(
        n,
        &modules,
        settings.log_retention_age,
        settings.data_dir.as_deref(),
    );
    // An exporter connects before anything publishes; an importer once
    // the consumers (added before) are subscribed.
    let link = match nats::Direction::of(&modules) {
        nats::Direction::Export => {
            let t = nats::connect(bus, cfg, &n.url).await?;
            say(&format!("[nats] exporting metrics.> to {}", n.url));
            nats::NatsLink::connected(t, &n.url)
        }
        d => nats::NatsLink::connect_on_start(cfg, &n.url, d),
    };
    rt.add(link).restart(busline::Restart::Never);
    Ok(())
}

/// The web page and API, the ingest listeners and scrapers, and the
/// simulated services; returns the page's URL.
fn add_publishers(
    rt: &mut Runtime<Metric>,
    settings: &Settings,
    shared: &Arc<Shared>,
    endpoints: Endpoints,
) -> Option<String> {
    let web_url = endpoints.web.as_ref().map(web::Web::url);
    if let Some(w) = endpoints.web {
        println!("[web] dashboard on {}", w.url());
        rt.add(w);
    }
    if let Some(o) = endpoints.otlp {
        println!("[otlp] OTLP/HTTP metrics on http://{}/v1/metrics", o.addr());
        rt.add(o);
    }
    if !settings.scrape.is_empty() {
        println!(
            "[scrape] scraping {} every {}s",
            settings
                .scrape
                .iter()
                .map(|t| format!("{} ({})", t.url, t.job))
                .collect::<Vec<_>>()
                .join(", "),
            settings.scrape_interval.as_secs_f64()
        );
        rt.add(scrape::Scraper::new(
            settings.scrape.clone(),
            settings.scrape_interval,
            shared.ingest.clone(),
        ));
    }
    if let Some(l) = endpoints.statsd {
        println!("{}", l.describe());
        rt.add(l);
    }
    if settings.simulate {
        let modules = settings.modules;
        for (on, service) in [
            (modules.web_sim, publishers::Service::Web),
            (modules.db_sim, publishers::Service::Db),
        ] {
            if on {
                rt.add(publishers::Simulator::new(
                    service,
                    settings.interval,
                    settings.error_rate,
                ));
            }
        }
    }
    web_url
}

/// What `[monitor] running:` says: the simulated services and how to stop.
fn running_line(settings: &Settings) -> String {
    let modules = settings.modules;
    format!(
        "{} (stop with Ctrl-C{})",
        if settings.simulate && (modules.web_sim || modules.db_sim) {
            format!(
                "simulated {} every {}ms, error rate {}",
                match (modules.web_sim, modules.db_sim) {
                    (true, true) => "web + db",
                    (true, false) => "web",
                    _ => "db",
                },
                settings.interval.as_millis(),
                settings.error_rate
            )
        } else {
            "no simulated services".to_owned()
        },
        match settings.duration {
            Some(d) => format!(", or after {}s", d.as_secs_f64()),
            None => String::new(),
        }
    )
}

/// `--duration`: stops the runtime when it elapses.
struct DurationTimer {
    task: tokio::task::JoinHandle<()>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl DurationTimer {
    fn start(d: Duration, handle: busline::RuntimeHandle) -> DurationTimer {
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fired.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(d).await;
            flag.store(true, Ordering::SeqCst);
            // Stop first: a closed stdout (`| head`) must not keep it running.
            handle.shutdown();
            say("[monitor] stopping: --duration elapsed");
        });
        DurationTimer { task, fired }
    }

    /// Whether it fired; once it did, its line is printed before this returns
    /// (so it comes before the last line).
    async fn finish(self) -> bool {
        if self.fired.load(Ordering::SeqCst) {
            let _ = self.task.await;
            true
        } else {
            self.task.abort();
            false
        }
    }
}
