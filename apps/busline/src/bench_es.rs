//! `busline bench es`: event-sourcing costs on the durable log — aggregate
//! load by full replay beside load from a snapshot, and projection catch-up.

use std::time::Instant;

use anyhow::{ensure, Result};
use busline_es::{
    Aggregate, AggregateStore, DomainEvent, Loaded, Metadata, Projection, ProjectionOptions,
    ProjectionRunner, Recorded, StoreOptions,
};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Options of `bench es`.
#[derive(Debug, Args)]
pub struct EsArgs {
    /// Events in the aggregate's stream.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Snapshot every this many events (for `load-snapshot`; the default
    /// leaves a 1,000-event tail after the last snapshot of 10,000 events).
    #[arg(long, default_value_t = 3_000)]
    pub snapshot_every: u64,
    /// Rounds per case; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: u64, memo: String },
    Withdrawn { amount: u64 },
}

impl DomainEvent for AccountEvent {
    const TYPES: &'static [&'static str] = &["Deposited", "Withdrawn"];
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    deposits: u64,
    withdrawals: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = ();
    type Event = AccountEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, _: ()) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![])
    }
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount, .. } => {
                self.balance += amount;
                self.deposits += 1;
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance -= amount;
                self.withdrawals += 1;
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Totals {
    events: u64,
    balance: u64,
}

impl Projection for Totals {
    const AGGREGATE_TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, r: &Recorded<AccountEvent>) {
        self.events += 1;
        match r.event {
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

#[derive(Debug, Serialize)]
struct CaseResult {
    case: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events_per_s: Option<f64>,
    events: u64,
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `bench es`.
pub async fn run(args: EsArgs) -> Result<()> {
    ensure!(
        args.events > 0 && args.rounds > 0,
        "--events and --rounds must be positive"
    );
    ensure!(
        args.snapshot_every >= 1 && args.snapshot_every <= args.events,
        "--snapshot-every must be between 1 and --events ({}): the bench compares a load from a snapshot with a full replay",
        args.events
    );
    let tmp = tempfile::tempdir()?;
    let log = busline_log::Log::open(tmp.path().join("log"), Default::default())?;
    let store = AggregateStore::<Account>::open(
        log.clone(),
        StoreOptions::default().snapshot_every(args.snapshot_every),
    )?;
    let id = "acct-1";
    fill(&store, id, args.events).await?;

    let full_state = store.load_full(id)?;
    let snapshot_version = match store.snapshots() {
        Some(s) => s
            .read::<Account>(Account::TYPE, id)
            .map_err(anyhow::Error::msg)?
            .map_or(0, |(v, _)| v),
        None => 0,
    };
    let (full, snap) = time_loads(&store, id, args.rounds, &full_state)?;

    let rates = time_projection(&log, tmp.path(), &args, full_state.state.balance)?;

    let results = vec![
        CaseResult {
            case: "load-full",
            ms: Some(median(full)),
            events_per_s: None,
            events: args.events,
            rounds: args.rounds,
        },
        CaseResult {
            case: "load-snapshot",
            ms: Some(median(snap)),
            events_per_s: None,
            events: args.events,
            rounds: args.rounds,
        },
        CaseResult {
            case: "projection-catch-up",
            ms: None,
            events_per_s: Some(median(rates)),
            events: args.events,
            rounds: args.rounds,
        },
    ];
    let speedup = results[0].ms.unwrap_or(0.0) / results[1].ms.unwrap_or(1.0).max(1e-9);
    if args.json {
        let out = serde_json::json!({
            "bench": "es",
            "events": args.events,
            "snapshot_every": args.snapshot_every,
            "snapshot_version": snapshot_version,
            "tail_events": args.events - snapshot_version,
            "results": results,
            "snapshot_speedup": speedup,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{:<22} {:>12} {:>16}", "case", "ms", "events/s");
        for r in &results {
            println!(
                "{:<22} {:>12} {:>16}",
                r.case,
                r.ms.map_or("-".into(), |m| format!("{m:.3}")),
                r.events_per_s.map_or("-".into(), |e| format!("{e:.0}"))
            );
        }
        println!(
            "snapshot (at version {snapshot_version}) + {} tail events is {speedup:.1}x faster than full replay",
            args.events - snapshot_version
        );
    }
    Ok(())
}

/// Appends `events` account events to `id`, 100 at a time.
async fn fill(store: &AggregateStore<Account>, id: &str, events: u64) -> Result<()> {
    let mut version = 0;
    while version < events {
        let n = (events - version).min(100);
        let events = (version..version + n)
            .map(|i| {
                if i % 4 == 3 {
                    AccountEvent::Withdrawn { amount: 1 }
                } else {
                    AccountEvent::Deposited {
                        amount: 2,
                        memo: format!("deposit number {i}"),
                    }
                }
            })
            .collect();
        version = store
            .append(id, version, events, Metadata::new())
            .await?
            .version;
    }

    Ok(())
}

/// Times `rounds` full replays and snapshot loads of `id` (milliseconds),
/// checking each against `full_state`.
fn time_loads(
    store: &AggregateStore<Account>,
    id: &str,
    rounds: usize,
    full_state: &Loaded<Account>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut full = Vec::new();
    let mut snap = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let l = store.load_full(id)?;
        full.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(l == *full_state, "full replay differs between rounds");
        let t = Instant::now();
        let l = store.load(id)?;
        snap.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(l.from_snapshot, "the snapshot was not used");
        ensure!(
            l.state == full_state.state,
            "snapshot load differs from full replay"
        );
    }

    Ok((full, snap))
}

/// Times a projection catching up from the start of `log`, once per round
/// (events per second), checking it agrees with the aggregate's balance.
fn time_projection(
    log: &busline_log::Log,
    dir: &std::path::Path,
    args: &EsArgs,
    want_balance: u64,
) -> Result<Vec<f64>> {
    let mut rates = Vec::new();
    for r in 0..args.rounds {
        let ckpt = dir.join(format!("totals-{r}.ckpt"));
        let mut p = ProjectionRunner::<Totals>::open(
            log.clone(),
            &ckpt,
            ProjectionOptions::default().commit_every(1_000),
        )?;
        let t = Instant::now();
        let n = p.catch_up()?;
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        let (events, balance) = p.handle().query(|t| (t.events, t.balance));
        ensure!(
            events == args.events && balance == want_balance,
            "projection disagrees with the aggregate"
        );
    }

    Ok(rates)
}
