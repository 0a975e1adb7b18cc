//! The `series` module: feeds every metric on the bus into the [`Store`]
//! and hands a [`StoreView`] to the dashboard, the web page and the
//! terminal view every second.
//!
//! ## Lossless
//!
//! It subscribes to `metrics.>` *lossless* (a queue of [`SERIES_QUEUE`]):
//! when it falls behind, publishers wait (the StatsD listener then leaves
//! datagrams in its socket, where the kernel counts what it drops), so every
//! sample that reached the bus is counted in its series — which is what lets
//! an ingest benchmark account for every line sent. Recording a sample is a
//! hash lookup and a few additions, far cheaper than parsing it, so it keeps
//! up with the listeners. (The seed's 1 s summary stays on its own lossy
//! subscription, see [`dashboard`](super::super::dashboard).)
//!
//! With the event log it starts from the last minute of it, like the
//! dashboard: replayed samples count in their own seconds.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::{BoxError, Context, Module, RecvError};

use super::{Store, StoreView};
use crate::monitor::metric::Metric;
use crate::monitor::sample::unix_ms;

/// Queue capacity of the series module's lossless subscription.
pub const SERIES_QUEUE: usize = 4096;

/// The series module.
#[derive(Clone)]
pub struct SeriesFeed {
    published: Arc<super::Published>,
    max_series: usize,
    warm_up: bool,
}

impl SeriesFeed {
    /// A feed of at most `max_series` series, publishing into `published`.
    pub fn new(published: Arc<super::Published>, max_series: usize) -> SeriesFeed {
        SeriesFeed {
            published,
            max_series,
            warm_up: false,
        }
    }

    /// Starts with the last minute of the bus's event store.
    pub fn warm_up(mut self) -> Self {
        self.warm_up = true;
        self
    }
}

impl Module<Metric> for SeriesFeed {
    fn name(&self) -> &str {
        "series"
    }

    /// Runs until shutdown.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let mut builder = ctx
            .subscriber("metrics.>")
            .lossless(SERIES_QUEUE)
            .name("series");
        if self.warm_up {
            let since = SystemTime::now()
                .checked_sub(Duration::from_secs(super::MINUTE))
                .unwrap_or(UNIX_EPOCH);
            builder = builder.from(busline::StartAt::Time(since));
        }
        let mut sub = builder.subscribe()?;
        let mut store = Store::new(self.max_series);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => break,
                _ = tick.tick() => {
                    let now = unix_ms(SystemTime::now());
                    store.expire(now);
                    let view: StoreView = store.view(now);
                    self.published.set(Arc::new(view));
                }
                ev = sub.recv() => match ev {
                    Ok(env) => {
                        let now = unix_ms(SystemTime::now());
                        store.record(&env.payload, unix_ms(env.timestamp()), now);
                    }
                    Err(RecvError::Lagged(n)) => self.published.missed(n),
                    Err(RecvError::Closed) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}
