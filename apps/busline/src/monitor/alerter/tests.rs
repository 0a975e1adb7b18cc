use super::*;

use busline::Bus;

use crate::monitor::config::{MonitorArgs, Settings};
use crate::monitor::sample::{Sample, Value};

/// The seed's state machine, through the rule engine: the default rule fed
/// `rate` after `rate`.
fn seed_steps(threshold: u64, seq: &[u64]) -> Vec<Transition> {
    let rule = Rule::default_errors(threshold);
    let mut state = RuleState::new(0);
    seq.iter()
        .filter_map(|&r| state.step(&rule, Some(r as f64), 0))
        .map(|c| transition(&rule, c))
        .collect()
}

#[test]
fn fires_once_per_crossing() {
    let seq = [0, 5, 10, 11, 12, 30, 11, 10, 9, 10, 11, 11];
    let got = seed_steps(10, &seq);
    assert_eq!(
        got,
        vec![
            Transition::Firing {
                rate: 11,
                threshold: 10
            },
            Transition::Resolved {
                rate: 10,
                threshold: 10
            },
            Transition::Firing {
                rate: 11,
                threshold: 10
            },
        ]
    );
    assert_eq!(
        got[0].text(),
        "[ALERT] Error rate: 11/min — threshold exceeded! (threshold 10/min)"
    );
    assert_eq!(got[1].text(), "[ALERT] Error rate back to normal: 10/min");
    let rule = Rule::default_errors(10);
    assert_eq!(line(&rule, &got[0]), got[0].text());
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(
        &Settings::resolve(&MonitorArgs::default()).unwrap(),
    ))
}

/// Runs `alerter` on `bus`, subscribed; the closure stops it.
async fn start(
    bus: &Bus<Metric>,
    mut alerter: Alerter,
) -> (impl FnOnce(), tokio::task::JoinHandle<Result<(), BoxError>>) {
    let ctx = Context::detached("alerter", bus.clone());
    let token = ctx.shutdown_token();
    let task = tokio::spawn(async move { alerter.run(ctx).await });
    while bus.stats().subscriber("alerter").is_none() {
        tokio::task::yield_now().await;
    }
    (move || token.cancel(), task)
}

fn error() -> Metric {
    Metric::Error {
        source: "db".into(),
        message: "down".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_module_fires_once_then_recovers() {
    let bus = Bus::<Metric>::new();
    let shared = shared();
    let (stop, task) = start(&bus, Alerter::new(10, shared.clone(), None)).await;
    for _ in 0..30 {
        bus.publish(error()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts = shared.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0].transition,
        Transition::Firing {
            rate: 11,
            threshold: 10
        }
    );
    // A minute later the errors have left the window: one recovery line.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let alerts = shared.alerts();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    // (The window moves in 1 s buckets while errors came every 100 ms: at
    // or just below.)
    assert!(
        matches!(alerts[1].transition, Transition::Resolved { rate, .. } if (8..=10).contains(&rate)),
        "{alerts:?}"
    );
    stop();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn errors_count_at_their_event_time() {
    let rule = Rule::default_errors(10);
    let mut w = RuleWindow::new(&rule);
    let e = Sample::new(
        "error",
        Value::Error {
            message: "x".into(),
        },
    );
    let now = SystemTime::now();
    assert!(!w.record("db", &e, now - Duration::from_secs(61)));
    assert!(w.record("db", &e, now - Duration::from_secs(50)));
    assert!(w.record("db", &e, now - Duration::from_secs(5)));
    assert!(w.record("db", &e, now + Duration::from_secs(5)));
    assert_eq!(w.value(), Some(3.0));
    // The 50 s old one leaves the window 10 s later, not a minute later.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(w.value(), Some(2.0));
}

#[tokio::test(start_paused = true)]
async fn a_restart_replays_the_last_minute_at_event_time() {
    use busline::MemoryStore;

    let bus = Bus::<Metric>::new();
    bus.persist("metrics.>", Arc::new(MemoryStore::new()))
        .unwrap();
    let now = SystemTime::now();
    // 20 errors two minutes ago (too old to count), 4 ten seconds ago.
    for i in 0..24 {
        let ago = if i < 20 { 120 } else { 10 };
        bus.send(
            error()
                .message("db-sim")
                .timestamp(now - Duration::from_secs(ago)),
        )
        .await
        .unwrap();
    }
    let shared = shared();
    let ctx = Context::detached("alerter", bus.clone());
    let stop = ctx.shutdown_token();
    let mut alerter = Alerter::new(3, shared.clone(), None).warm_up();
    let task = tokio::spawn(async move { alerter.run(ctx).await });
    while shared.alert_rate() < 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The 4 recent ones fire (4 > 3); the old 20 never counted.
    let alerts = shared.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(shared.alert_rate(), 4);
    // They happened 10 s before the start: gone 50 s after it.
    tokio::time::sleep(Duration::from_secs(46)).await;
    assert_eq!(shared.alert_rate(), 0);
    assert_eq!(shared.alerts().len(), 2);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn storm_then_calm() {
    // 2 errors/s for 30 s, then nothing: one alert, one recovery.
    let rule = Rule::default_errors(10);
    let mut w = RuleWindow::new(&rule);
    let mut state = RuleState::new(0);
    let e = Sample::new(
        "error",
        Value::Error {
            message: "x".into(),
        },
    );
    let mut seen = Vec::new();
    for step in 0..(200 * 4) {
        if step < 30 * 4 && step % 2 == 0 {
            // "Now" (the wall clock runs on while tokio's is paused: a
            // hair ahead, so the error lands in this very instant's bucket).
            w.record("web", &e, SystemTime::now() + Duration::from_millis(1));
        }
        if let Some(c) = state.step(&rule, w.value(), 0) {
            seen.push((step / 4, transition(&rule, c)));
        }
        tokio::time::advance(Duration::from_millis(250)).await;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(matches!(seen[0].1, Transition::Firing { rate: 11, .. }));
    assert_eq!(seen[0].0, 5); // the 11th error, at 5 s
    assert!(
        matches!(seen[1].1, Transition::Resolved { rate: 10, .. }),
        "{seen:?}"
    );
    // The 11th-last error (at 24.5 s) leaves the window at 84.5 s (its
    // second's bucket at 84 s).
    assert_eq!(seen[1].0, 84);
}

fn rules(toml_text: &str) -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct F {
        alert: Vec<toml::Table>,
    }
    let f: F = toml::from_str(toml_text).unwrap();
    crate::monitor::rule::parse_rules(&f.alert).unwrap()
}

fn requests(n: f64) -> Metric {
    Metric::Samples {
        source: "web".into(),
        samples: vec![
            Sample::new("api.requests", Value::Counter { value: n }).label("route", "/api/x")
        ],
    }
}

fn state_of(shared: &Shared, name: &str) -> RuleStatus {
    shared
        .rules()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}: {:?}", shared.rules()))
}

/// A configured rule with a `for`: pending, then firing once, then
/// resolved once; its state is in the shared state all along.
#[tokio::test(start_paused = true)]
async fn a_configured_rule_is_pending_then_fires_then_resolves() {
    let bus = Bus::<Metric>::new();
    let shared = shared();
    let busy = rules(
        r#"
        [[alert]]
        name = "busy"
        metric = "api.*"
        source = "web"
        labels = { route = "/api/*" }
        function = "rate_per_s"
        window = "10s"
        threshold = 5
        for = "3s"
        "#,
    );
    let (stop, task) = start(&bus, Alerter::new(10, shared.clone(), None).rules(busy)).await;
    let names: Vec<String> = shared.rules().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["error-rate", "busy"]);
    let mut states = Vec::new();
    // 10 requests a second for 15 s: the 10 s rate climbs past 5 at ~5 s.
    for i in 0..150 {
        bus.publish(requests(1.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i % 10 == 9 {
            states.push(state_of(&shared, "busy").state);
        }
    }
    let firing_at = states.iter().position(|s| *s == State::Firing).unwrap();
    let pending_at = states.iter().position(|s| *s == State::Pending).unwrap();
    assert!(pending_at < firing_at, "{states:?}");
    // The 3 s `for`: pending for 3 to 4 evaluations' seconds.
    assert!((3..=4).contains(&(firing_at - pending_at)), "{states:?}");
    let s = state_of(&shared, "busy");
    // 10/s (less up to a bucket's share: the window moves in 1/60 steps).
    assert!(s.value.is_some_and(|v| (9.8..=10.0).contains(&v)), "{s:?}");
    assert_eq!(
        s.expr,
        r#"rate_per_s(api.*{source="web",route="/api/*"} [10s]) > 5 for 3s"#
    );
    // Stop: the rate falls; one resolved line.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alerts = shared.alerts();
    let texts: Vec<&str> = alerts.iter().map(|a| a.text.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with(
            r#"[ALERT] busy: rate_per_s(api.*{source="web",route="/api/*"} [10s]) = "#
        ) && texts[0].ends_with(" > 5 for 3s — firing"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with(
            r#"[ALERT] busy resolved: rate_per_s(api.*{source="web",route="/api/*"} [10s]) = "#
        ),
        "{texts:?}"
    );
    assert_eq!(alerts[0].rule, "busy");
    let json = serde_json::to_value(&alerts[1]).unwrap();
    assert_eq!(json["state"], "resolved", "{json}");
    assert_eq!(json["threshold"], 5.0, "{json}");
    assert!(json["value"].as_f64().unwrap() <= 5.0, "{json}");
    assert_eq!(state_of(&shared, "busy").state, State::Ok);
    // Samples of another source or route never counted.
    assert_eq!(state_of(&shared, "error-rate").value, Some(0.0));
    stop();
    task.await.unwrap().unwrap();
}

/// An `up` rule fires when a scrape target's last `up` is 0, and resolves
/// when it is back.
#[tokio::test(start_paused = true)]
async fn an_up_rule_fires_while_a_target_is_down() {
    let bus = Bus::<Metric>::new();
    let shared = shared();
    let r = rules("[[alert]]\nname = \"target-down\"\nfunction = \"up\"\n");
    let (stop, task) = start(&bus, Alerter::new(10, shared.clone(), None).rules(r)).await;
    let scrape = |instance: &str, v: f64| Metric::Samples {
        source: "node".into(),
        samples: vec![Sample::new("up", Value::Gauge { value: v })
            .label("instance", instance)
            .label("job", "node")],
    };
    for (a, b) in [(1.0, 1.0), (1.0, 0.0), (1.0, 0.0), (1.0, 1.0)] {
        bus.publish(scrape("http://a:9100/metrics", a))
            .await
            .unwrap();
        bus.publish(scrape("http://b:9100/metrics", b))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let texts: Vec<String> = shared.alerts().into_iter().map(|a| a.text).collect();
    assert_eq!(
        texts,
        [
            "[ALERT] target-down: up(up [1m]) = 1 > 0 — firing",
            "[ALERT] target-down resolved: up(up [1m]) = 0",
        ]
    );
    stop();
    task.await.unwrap().unwrap();
}

/// Replayed samples count at their own time: a configured rule's window
/// after a restart is what it was.
#[tokio::test(start_paused = true)]
async fn a_configured_rule_replays_its_window_at_event_time() {
    use busline::MemoryStore;

    let bus = Bus::<Metric>::new();
    bus.persist("metrics.>", Arc::new(MemoryStore::new()))
        .unwrap();
    let now = SystemTime::now();
    // Latencies of 5 minutes ago (outside the 2m window) and of 30 s ago.
    for (ago, ms) in [(300, 900.0), (300, 950.0), (30, 120.0), (30, 80.0)] {
        let m = Metric::Samples {
            source: "web".into(),
            samples: vec![Sample::new(
                "api.latency",
                Value::Observation {
                    value: ms,
                    weight: 1.0,
                },
            )],
        };
        bus.send(m.message("web").timestamp(now - Duration::from_secs(ago)))
            .await
            .unwrap();
    }
    let shared = shared();
    let r = rules(
        "[[alert]]\nname = \"slow\"\nmetric = \"api.latency\"\nfunction = \"max\"\nwindow = \"2m\"\nthreshold = 100\n",
    );
    let ctx = Context::detached("alerter", bus.clone());
    let token = ctx.shutdown_token();
    let mut alerter = Alerter::new(10, shared.clone(), None).rules(r).warm_up();
    let task = tokio::spawn(async move { alerter.run(ctx).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = state_of(&shared, "slow");
    assert_eq!((s.state, s.value), (State::Firing, Some(120.0)), "{s:?}");
    // 30 s old at the start: gone 90 s later.
    tokio::time::sleep(Duration::from_secs(90)).await;
    let s = state_of(&shared, "slow");
    assert_eq!((s.state, s.value), (State::Ok, None), "{s:?}");
    assert_eq!(shared.alerts().len(), 2);
    token.cancel();
    task.await.unwrap().unwrap();
}
