//! Simulated services: a web server and a database that emit plausible metrics.
//!
//! Each emits one metric per interval (100 ms by default). With probability
//! `error_rate` the metric is an [`Error`](Metric::Error) instead. Latencies
//! are log-normal (most requests fast, a long tail), with a slow drift over a
//! couple of minutes so the charts have something to show.

use std::f64::consts::PI;

use rand::Rng;

use busline::{BoxError, Context, Module};

use super::metric::Metric;

/// Which service a [`Simulator`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// A web server: `Request` metrics, `web` errors.
    Web,
    /// A database: `DbQuery` metrics, `db` errors.
    Db,
}

impl Service {
    /// The module's name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Web => "web-sim",
            Service::Db => "db-sim",
        }
    }
}

const PATHS: &[(&str, f64, f64)] = &[
    // path, median ms, sigma
    ("/api/data", 45.0, 0.5),
    ("/api/users", 30.0, 0.4),
    ("/api/orders", 80.0, 0.6),
    ("/login", 120.0, 0.35),
    ("/health", 2.0, 0.3),
];

const QUERIES: &[(&str, f64, f64)] = &[
    ("SELECT * FROM users WHERE id = $1", 3.0, 0.4),
    (
        "SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
        12.0,
        0.6,
    ),
    ("UPDATE orders SET status = $1 WHERE id = $2", 8.0, 0.5),
    (
        "INSERT INTO events (kind, payload) VALUES ($1, $2)",
        5.0,
        0.5,
    ),
    (
        "SELECT count(*) FROM sessions WHERE expires_at > now()",
        25.0,
        0.7,
    ),
];

const WEB_ERRORS: &[&str] = &[
    "upstream timeout after 5000ms",
    "500 internal server error on /api/orders",
    "connection reset by peer",
    "503 service unavailable: too many open connections",
];

const DB_ERRORS: &[&str] = &[
    "deadlock detected",
    "connection pool exhausted (max 20)",
    "canceling statement due to statement timeout",
    "could not serialize access due to concurrent update",
];

/// Makes the next metric of a simulated service.
pub fn next_metric(
    service: Service,
    error_rate: f64,
    elapsed_secs: f64,
    rng: &mut impl Rng,
) -> Metric {
    if error_rate > 0.0 && rng.random_bool(error_rate.min(1.0)) {
        let (source, list) = match service {
            Service::Web => ("web", WEB_ERRORS),
            Service::Db => ("db", DB_ERRORS),
        };
        return Metric::Error {
            source: source.into(),
            message: list[rng.random_range(0..list.len())].into(),
        };
    }
    // A slow wave (period 2 minutes) makes load visible on the charts.
    let drift = 1.0 + 0.35 * (elapsed_secs * 2.0 * PI / 120.0).sin();
    match service {
        Service::Web => {
            let (path, median, sigma) = PATHS[rng.random_range(0..PATHS.len())];
            let latency = log_normal(rng, median * drift, sigma);
            let status = match rng.random_range(0..100) {
                0..=1 => 404,
                2..=4 => 201,
                5 => 304,
                _ => 200,
            };
            Metric::Request {
                path: path.into(),
                latency_ms: round2(latency),
                status,
            }
        }
        Service::Db => {
            let (query, median, sigma) = QUERIES[rng.random_range(0..QUERIES.len())];
            let mut duration = log_normal(rng, median * drift, sigma);
            if rng.random_bool(0.01) {
                duration *= 10.0; // the occasional table scan
            }
            Metric::DbQuery {
                query: query.into(),
                duration_ms: round2(duration),
            }
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A log-normal sample with the given median (Box–Muller).
fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
    (median * (sigma * z).exp()).clamp(0.01, 60_000.0)
}

/// A simulated service module.
#[derive(Debug, Clone)]
pub struct Simulator {
    service: Service,
    interval: std::time::Duration,
    error_rate: f64,
}

impl Simulator {
    /// A simulator of `service` emitting every `interval`.
    pub fn new(service: Service, interval: std::time::Duration, error_rate: f64) -> Self {
        Simulator {
            service,
            interval,
            error_rate,
        }
    }
}

impl Module<Metric> for Simulator {
    fn name(&self) -> &str {
        self.service.name()
    }

    /// Emits until shutdown.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => return Ok(()),
                _ = tick.tick() => {
                    let m = {
                        let mut rng = rand::rng();
                        next_metric(self.service, self.error_rate, start.elapsed().as_secs_f64(), &mut rng)
                    };
                    // Not cancelled by a stop: a publish under way may be
                    // in the event log already, so it finishes (the
                    // consumers stop after the publishers and keep taking).
                    ctx.publish(m).await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plausible_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut errors, mut lat) = (0, Vec::new());
        for i in 0..10_000 {
            match next_metric(Service::Web, 0.1, i as f64 / 10.0, &mut rng) {
                Metric::Request {
                    latency_ms,
                    path,
                    status,
                } => {
                    assert!(latency_ms > 0.0 && latency_ms < 60_000.0);
                    assert!(path.starts_with('/'));
                    assert!((100..600).contains(&status));
                    lat.push(latency_ms);
                }
                Metric::Error { source, .. } => {
                    assert_eq!(source, "web");
                    errors += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        // 10% ± a generous margin.
        assert!((700..1300).contains(&errors), "{errors}");
        lat.sort_by(f64::total_cmp);
        let median = lat[lat.len() / 2];
        assert!((10.0..150.0).contains(&median), "{median}");
    }

    #[test]
    fn all_errors_and_none() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let is_error = |m: Metric| matches!(m, Metric::Error { .. });
            assert!(is_error(next_metric(Service::Db, 1.0, 0.0, &mut rng)));
            assert!(!is_error(next_metric(Service::Db, 0.0, 0.0, &mut rng)));
        }
    }
}
