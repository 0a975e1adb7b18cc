use super::*;

use crate::monitor::rule::{Function, Rule};

fn rule(function: Function, window_s: u64) -> Rule {
    let mut r = Rule::default_errors(0);
    r.is_default = false;
    r.selector.errors_only = false;
    r.function = function;
    r.window = Duration::from_secs(window_s);
    r
}

/// "Now" on the wall clock (a hair ahead: it runs on while tokio's clock
/// is paused, so the sample lands in this instant's bucket).
fn now() -> SystemTime {
    SystemTime::now() + Duration::from_millis(1)
}

fn counter(v: f64) -> Sample {
    Sample::new("c", Value::Counter { value: v })
}

fn gauge(v: f64) -> Sample {
    Sample::new("g", Value::Gauge { value: v })
}

fn obs(v: f64, weight: f64) -> Sample {
    Sample::new("o", Value::Observation { value: v, weight })
}

fn window_of(function: Function, window_s: u64, samples: &[Sample]) -> RuleWindow {
    let mut w = RuleWindow::new(&rule(function, window_s));
    for s in samples {
        assert!(w.record("svc", s, now()));
    }
    w
}

#[tokio::test(start_paused = true)]
async fn rates_divide_counter_increments_by_the_window() {
    let samples = [counter(30.0), counter(60.0), counter(30.0)];
    let mut w = window_of(Function::RatePerS, 60, &samples);
    assert_eq!(w.value(), Some(2.0));
    let mut w = window_of(Function::RatePerMin, 60, &samples);
    assert_eq!(w.value(), Some(120.0));
    // Other kinds count as samples: 4 errors in 2 s.
    let e = Sample::new(
        "error",
        Value::Error {
            message: "x".into(),
        },
    );
    let mut w = window_of(Function::RatePerS, 2, &[e.clone(), e.clone(), e.clone(), e]);
    assert_eq!(w.value(), Some(2.0));
    // Empty: zero (not -0), not "no value".
    let mut w = window_of(Function::RatePerS, 60, &[]);
    assert!(w.value().is_some_and(|v| v == 0.0 && v.is_sign_positive()));
}

#[tokio::test(start_paused = true)]
async fn count_weighs_observations_and_histogram_buckets() {
    let h = Sample::new(
        "h",
        Value::Histogram {
            bounds: vec![10.0, 100.0],
            counts: vec![3, 4, 1],
            sum: None,
            min: None,
            max: None,
        },
    );
    let set = Sample::new(
        "s",
        Value::Set {
            member: "u1".into(),
        },
    );
    let mut w = window_of(
        Function::Count,
        60,
        &[counter(5.0), gauge(1.0), obs(3.0, 10.0), h, set],
    );
    assert_eq!(w.value(), Some(1.0 + 1.0 + 10.0 + 8.0 + 1.0));
}

#[tokio::test(start_paused = true)]
async fn sum_avg_min_max_of_values() {
    let samples = [obs(10.0, 1.0), obs(20.0, 3.0), gauge(-5.0)];
    let v = |f| window_of(f, 60, &samples).value();
    assert_eq!(v(Function::Sum), Some(10.0 + 60.0 - 5.0));
    assert_eq!(v(Function::Avg), Some(65.0 / 5.0));
    assert_eq!(v(Function::Min), Some(-5.0));
    assert_eq!(v(Function::Max), Some(20.0));
    // No values (errors only): none, so the rule does not hold.
    let e = Sample::new(
        "error",
        Value::Error {
            message: "x".into(),
        },
    );
    for f in [Function::Avg, Function::Min, Function::Max, Function::P99] {
        assert_eq!(
            window_of(f, 60, std::slice::from_ref(&e)).value(),
            None,
            "{f:?}"
        );
    }
    assert_eq!(window_of(Function::Sum, 60, &[e]).value(), Some(0.0));
}

/// Within the percentiles' precision (0.1%).
fn close(got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("no value, want {want}"));
    assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
}

#[tokio::test(start_paused = true)]
async fn percentiles_within_histogram_precision() {
    let samples: Vec<Sample> = (1..=1000).map(|i| obs(i as f64, 1.0)).collect();
    for (f, want) in [
        (Function::P50, 500.0),
        (Function::P90, 900.0),
        (Function::P99, 990.0),
    ] {
        let got = window_of(f, 60, &samples).value().unwrap();
        assert!((got - want).abs() <= want * 0.002, "{f:?}: {got}");
    }
    // A weight counts as that many observations.
    let mut w = window_of(Function::P50, 60, &[obs(1.0, 1.0), obs(100.0, 9.0)]);
    close(w.value(), 100.0);
    // A histogram's buckets at their midpoints: 90% in (0, 10], 10% in
    // (100, 200]; a hundred million observations, recorded at the cost of
    // one per bucket.
    let h = Sample::new(
        "h",
        Value::Histogram {
            bounds: vec![10.0, 100.0, 200.0],
            counts: vec![90_000_000, 0, 10_000_000, 0],
            sum: None,
            min: None,
            max: None,
        },
    );
    let mut w = window_of(Function::P50, 60, std::slice::from_ref(&h));
    close(w.value(), 5.0);
    let mut w = window_of(Function::P99, 60, std::slice::from_ref(&h));
    close(w.value(), 150.0);
    let mut w = window_of(Function::Max, 60, &[h]);
    assert_eq!(w.value(), Some(150.0));
}

#[tokio::test(start_paused = true)]
async fn last_is_the_newest_value_and_deltas_add_to_it() {
    let delta = |v| Sample::new("g", Value::GaugeDelta { value: v });
    let mut w = window_of(Function::Last, 60, &[gauge(5.0), delta(3.0), delta(-1.0)]);
    assert_eq!(w.value(), Some(7.0));
    // An older sample (a replay) does not overwrite a newer one.
    assert!(w.record(
        "svc",
        &gauge(100.0),
        SystemTime::now() - Duration::from_secs(30)
    ));
    assert_eq!(w.value(), Some(7.0));
    // Nothing new for a window: no value.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(w.value(), None);
}

/// A gauge delta adds to its own series (not to whichever matching series
/// was newest), and an older delta still counts, as in the series store.
#[tokio::test(start_paused = true)]
async fn last_deltas_add_to_their_own_series() {
    let g = |q: &str, v| Sample::new("g", Value::Gauge { value: v }).label("q", q);
    let d = |q: &str, v| Sample::new("g", Value::GaugeDelta { value: v }).label("q", q);
    let mut w = window_of(Function::Last, 60, &[g("a", 5.0)]);
    tokio::time::advance(Duration::from_secs(1)).await;
    w.record("svc", &g("b", 10.0), now());
    tokio::time::advance(Duration::from_secs(1)).await;
    w.record("svc", &d("a", 1.0), now());
    assert_eq!(w.value(), Some(6.0));
    w.record(
        "svc",
        &d("a", 2.0),
        SystemTime::now() - Duration::from_secs(3),
    );
    assert_eq!(w.value(), Some(8.0));
}

fn up(job: &str, instance: &str, v: f64) -> Sample {
    Sample::new("up", Value::Gauge { value: v })
        .label("instance", instance)
        .label("job", job)
}

#[tokio::test(start_paused = true)]
async fn up_counts_targets_whose_last_value_is_zero() {
    let mut w = window_of(
        Function::Up,
        60,
        &[
            up("api", "http://a/metrics", 1.0),
            up("api", "http://b/metrics", 1.0),
        ],
    );
    assert_eq!(w.value(), Some(0.0));
    tokio::time::advance(Duration::from_secs(5)).await;
    w.record("api", &up("api", "http://b/metrics", 0.0), now());
    assert_eq!(w.value(), Some(1.0));
    // b is back: its last value counts, not the worst one.
    tokio::time::advance(Duration::from_secs(5)).await;
    w.record("api", &up("api", "http://b/metrics", 1.0), now());
    assert_eq!(w.value(), Some(0.0));
    // A target not seen for a window is forgotten.
    w.record("api", &up("api", "http://c/metrics", 0.0), now());
    assert_eq!(w.value(), Some(1.0));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(w.value(), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn samples_leave_the_window_by_event_time_in_buckets() {
    let mut w = RuleWindow::new(&rule(Function::Count, 60));
    let t0 = SystemTime::now();
    assert!(!w.record("svc", &counter(1.0), t0 - Duration::from_secs(61)));
    assert!(w.record("svc", &counter(1.0), t0 - Duration::from_millis(30_500)));
    assert!(w.record("svc", &counter(1.0), now()));
    // The future counts as now; the distant past never does.
    assert!(w.record("svc", &counter(1.0), t0 + Duration::from_secs(3600)));
    assert!(!w.record("svc", &counter(1.0), SystemTime::UNIX_EPOCH));
    assert_eq!(w.value(), Some(3.0));
    // The 30.5 s old one is in the bucket of 31 s ago: gone at 29 s.
    tokio::time::advance(Duration::from_secs(28)).await;
    assert_eq!(w.value(), Some(3.0));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(w.value(), Some(2.0));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(w.value(), Some(0.0));
    // Memory is bounded: at most BUCKETS buckets, whatever the rate.
    for _ in 0..(3 * BUCKETS) {
        for _ in 0..100 {
            w.record("svc", &counter(1.0), now());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        w.value();
        assert!(w.buckets.len() <= BUCKETS as usize);
    }
    assert_eq!(w.value(), Some(100.0 * (BUCKETS - 1) as f64));
}

#[tokio::test(start_paused = true)]
async fn percentiles_rank_negative_values_and_open_buckets() {
    let neg: Vec<Sample> = [-30.0, -20.0, -10.0].map(|v| obs(v, 1.0)).to_vec();
    close(
        window_of(Function::P50, 60, &neg).value().map(f64::abs),
        20.0,
    );
    // The open last bucket counts between its bound and the sender's max,
    // as the series store counts it.
    let h = Sample::new(
        "h",
        Value::Histogram {
            bounds: vec![100.0],
            counts: vec![0, 10],
            sum: None,
            min: None,
            max: Some(300.0),
        },
    );
    close(window_of(Function::P99, 60, &[h]).value(), 200.0);
    // Fractional weights count as they are (not rounded to 1 each).
    let w = [obs(1.0, 0.4), obs(100.0, 1.4)];
    close(window_of(Function::P50, 60, &w).value(), 100.0);
}
