use super::*;

const NOW: u64 = 1_000_000_000; // a whole second, in ms

fn sample(name: &str, value: Value) -> Sample {
    Sample::new(name, value)
}

fn counter(v: f64) -> Value {
    Value::Counter { value: v }
}

fn obs(v: f64) -> Value {
    Value::Observation {
        value: v,
        weight: 1.0,
    }
}

/// Records `s` from `web` at `at_ms`, with the clock at `at_ms` too.
fn put(store: &mut Store, s: Sample, at_ms: u64) {
    store.record_sample("web", &s, at_ms, at_ms);
}

/// `got` is `want` within the histogram's precision (0.1%).
fn near(got: Option<f64>, want: f64) {
    let got = got.expect("a value");
    assert!((got - want).abs() <= want.abs() * 0.001, "{got} vs {want}");
}

fn one<'a>(v: &'a StoreView, series: &str) -> &'a SeriesView {
    v.series
        .iter()
        .find(|s| s.series == series)
        .unwrap_or_else(|| panic!("no series {series} in {v:#?}"))
}

#[test]
fn counters_count_sum_and_rate_per_second_and_minute() {
    let mut st = Store::new(100);
    for i in 0..10 {
        put(&mut st, sample("hits", counter(5.0)), NOW - 1000 + i * 10);
    }
    put(&mut st, sample("hits", counter(3.0)), NOW - 30_000);
    let v = st.view(NOW);
    let s = one(&v, "hits");
    assert_eq!(s.kind, "counter");
    assert_eq!(
        (s.second.count, s.second.sum, s.second.rate),
        (10.0, 50.0, 50.0)
    );
    assert_eq!((s.minute.count, s.minute.sum), (11.0, 53.0));
    assert!((s.minute.rate - 53.0 / 60.0).abs() < 1e-9);
    assert_eq!(s.points[59], 50.0);
    assert_eq!(s.points[30], 3.0);
    // The second being filled is not shown until it is complete.
    put(&mut st, sample("hits", counter(1.0)), NOW + 10);
    assert_eq!(one(&st.view(NOW + 500), "hits").second.sum, 50.0);
    assert_eq!(one(&st.view(NOW + 1000), "hits").second.sum, 1.0);
}

#[test]
fn observations_give_percentiles_within_histogram_precision() {
    let mut st = Store::new(100);
    for ms in 1..=1000 {
        put(&mut st, sample("lat", obs(ms as f64 / 10.0)), NOW - 500);
    }
    // Sampled at 1/4: stands for four values.
    put(
        &mut st,
        sample(
            "lat",
            Value::Observation {
                value: 1000.0,
                weight: 4.0,
            },
        ),
        NOW - 500,
    );
    let v = st.view(NOW);
    let s = &one(&v, "lat").second;
    assert_eq!(s.count, 1004.0);
    assert_eq!((s.min, s.max), (Some(0.1), Some(1000.0)));
    let mean = (50_050.0 + 4000.0) / 1004.0;
    assert!((s.mean.unwrap() - mean).abs() < 1e-9, "{s:?}");
    for (got, want) in [(s.p50, 50.2), (s.p90, 90.4)] {
        let got = got.unwrap();
        assert!((got - want).abs() <= want * 0.002, "{got} vs {want}: {s:?}");
    }
    // The weighted value is the top 0.4%: above the 99th percentile.
    assert!((s.p99.unwrap() - 99.4).abs() <= 0.1, "{s:?}");
    assert_eq!(s.rate, 1004.0);
}

#[test]
fn histograms_count_at_bucket_midpoints() {
    let mut st = Store::new(100);
    let h = |min, max| Value::Histogram {
        bounds: vec![10.0, 20.0, 40.0],
        counts: vec![1, 6, 2, 1],
        sum: None,
        min,
        max,
    };
    put(&mut st, sample("h", h(None, None)), NOW - 500);
    let v = st.view(NOW);
    let s = &one(&v, "h").second;
    assert_eq!(s.count, 10.0);
    // 5 (half the first bound) + 6 x 15 + 2 x 30 + 40 (the last lower bound)
    assert_eq!(s.sum, 5.0 + 90.0 + 60.0 + 40.0);
    assert_eq!((s.min, s.max), (Some(5.0), Some(40.0)));
    near(s.p50, 15.0);
    near(s.p90, 30.0);
    near(s.p99, 40.0);
    // With the sender's min and max, the open buckets sit between them and the bounds.
    let mut st = Store::new(100);
    put(&mut st, sample("h", h(Some(2.0), Some(60.0))), NOW - 500);
    let v = st.view(NOW);
    let s = &one(&v, "h").second;
    assert_eq!((s.min, s.max), (Some(2.0), Some(60.0)));
    near(s.p99, 50.0);
    // Counts that do not fit the bounds count nothing, and are reported.
    let bad = Value::Histogram {
        bounds: vec![1.0],
        counts: vec![1],
        sum: None,
        min: None,
        max: None,
    };
    put(&mut st, sample("h", bad), NOW - 500);
    assert_eq!(st.view(NOW).bad_histograms, 1);
}

#[test]
fn gauges_keep_the_last_value_and_deltas_add_to_it() {
    let mut st = Store::new(100);
    let g = |v| sample("temp", Value::Gauge { value: v });
    let d = |v| sample("temp", Value::GaugeDelta { value: v });
    put(&mut st, g(10.0), NOW - 3000);
    put(&mut st, d(5.0), NOW - 1500);
    put(&mut st, d(-2.0), NOW - 900);
    let v = st.view(NOW);
    let s = one(&v, "temp");
    assert_eq!(s.kind, "gauge");
    assert_eq!(s.value, Some(13.0));
    assert_eq!(s.second.last, Some(13.0));
    assert_eq!((s.minute.min, s.minute.max), (Some(10.0), Some(15.0)));
    // The sparkline holds the value through seconds without samples.
    assert_eq!(&s.points[57..], &[10.0, 15.0, 13.0]);
    // A delta on a gauge never set starts from 0.
    put(
        &mut st,
        sample("q", Value::GaugeDelta { value: -4.0 }),
        NOW - 500,
    );
    assert_eq!(one(&st.view(NOW), "q").value, Some(-4.0));
    // An older absolute value (a replay) does not replace a newer one.
    put(&mut st, g(99.0), NOW - 10_000);
    assert_eq!(one(&st.view(NOW), "temp").value, Some(13.0));
}

/// A gauge set once, long ago (more than the minute), shows its value
/// all along its sparkline, not zeros (review #11).
#[test]
fn a_steady_gauge_set_long_ago_holds_its_value() {
    let mut st = Store::new(100);
    put(
        &mut st,
        sample("temp", Value::Gauge { value: 7.0 }),
        NOW - 90_000,
    );
    let v = st.view(NOW);
    let s = one(&v, "temp");
    assert_eq!(s.value, Some(7.0));
    assert!(s.points.iter().all(|p| *p == 7.0), "{:?}", s.points);
}

#[test]
fn sets_count_distinct_members() {
    let mut st = Store::new(100);
    for (i, m) in ["a", "b", "a", "c"].iter().enumerate() {
        let s = sample(
            "users",
            Value::Set {
                member: m.to_string(),
            },
        );
        put(&mut st, s, NOW - 2000 + i as u64 * 400);
    }
    let v = st.view(NOW);
    let s = one(&v, "users");
    // Seconds: a, b, a in the one before the last, then c.
    assert_eq!(s.second.distinct, Some(1));
    assert_eq!(s.minute.distinct, Some(3));
    assert_eq!(s.minute.count, 4.0);
    assert_eq!(s.minute.mean, None);
}

/// Set members are kept up to the store's budget, across series (review
/// #6); past it windows count as capped, and the budget comes back as
/// seconds leave the minute.
#[test]
fn set_members_are_kept_within_the_stores_budget() {
    let mut st = Store::new(100);
    st.max_members = 5;
    let member = |set: &str, m: usize| {
        sample(
            set,
            Value::Set {
                member: format!("m{m}"),
            },
        )
    };
    for set in ["a", "b"] {
        for m in 0..4 {
            put(&mut st, member(set, m), NOW - 2000);
        }
    }
    // Again the same members: nothing new to keep.
    put(&mut st, member("a", 0), NOW - 2000);
    assert_eq!(st.members, 5);
    let v = st.view(NOW);
    let (a, b) = (one(&v, "a"), one(&v, "b"));
    assert_eq!(
        (a.minute.distinct, a.minute.distinct_capped),
        (Some(4), false)
    );
    assert_eq!(
        (b.minute.distinct, b.minute.distinct_capped),
        (Some(1), true)
    );
    assert_eq!(b.minute.count, 4.0);
    // Two minutes on, those seconds are gone: room again.
    let later = NOW + 120_000;
    st.expire(later);
    assert_eq!(st.members, 0);
    put(&mut st, member("b", 9), later - 500);
    assert_eq!(st.members, 1);
}

#[test]
fn errors_are_counted_with_their_last_message() {
    let mut st = Store::new(100);
    let e = |m: &str| Metric::Error {
        source: "db".into(),
        message: m.into(),
    };
    st.record(&e("first"), NOW - 700, NOW - 700);
    st.record(&e("second"), NOW - 600, NOW - 600);
    let v = st.view(NOW);
    let s = &v.series[0];
    assert_eq!(
        (s.source.as_str(), s.name.as_str(), s.kind),
        ("db", "error", "error")
    );
    assert_eq!((s.second.count, s.second.rate), (2.0, 2.0));
    assert_eq!(s.last_message.as_deref(), Some("second"));
}

#[test]
fn the_seed_shapes_are_series_too() {
    let mut st = Store::new(100);
    for ms in [10.0, 20.0] {
        let r = Metric::Request {
            path: "/a".into(),
            latency_ms: ms,
            status: 200,
        };
        st.record(&r, NOW - 500, NOW - 500);
    }
    let v = st.view(NOW);
    let s = one(&v, r#"request.latency_ms{path="/a",status="200"}"#);
    assert_eq!((s.source.as_str(), s.kind), ("web", "observation"));
    assert_eq!((s.second.count, s.second.mean), (2.0, Some(15.0)));
}

#[test]
fn series_are_told_apart_by_source_name_and_labels() {
    let mut st = Store::new(100);
    let s = sample("x", counter(1.0));
    st.record_sample("web", &s, NOW - 500, NOW);
    st.record_sample("db", &s, NOW - 500, NOW);
    st.record_sample("web", &s.clone().label("k", "v"), NOW - 500, NOW);
    st.record_sample("web", &s, NOW - 500, NOW);
    assert_eq!(st.len(), 3);
    let v = st.view(NOW);
    let names: Vec<(&str, &str)> = v
        .series
        .iter()
        .map(|s| (s.source.as_str(), s.series.as_str()))
        .collect();
    assert_eq!(names, [("db", "x"), ("web", "x"), ("web", r#"x{k="v"}"#)]);
    assert_eq!(v.series[1].second.count, 2.0);
}

#[test]
fn new_series_past_the_cap_are_counted_as_overflow() {
    let mut st = Store::new(10);
    for i in 0..(10 + OVERFLOW_NAMES as u64 + 30) {
        let s = sample(&format!("m{}", i % 200), counter(1.0)).label("id", i.to_string());
        put(&mut st, s, NOW - 500);
    }
    assert_eq!(st.len(), 10);
    // Known series still count.
    put(
        &mut st,
        sample("m0", counter(1.0)).label("id", "0"),
        NOW - 500,
    );
    let v = st.view(NOW);
    assert_eq!(v.series.len(), 10);
    assert_eq!(one(&v, r#"m0{id="0"}"#).second.count, 2.0);
    let o = &v.overflow;
    assert_eq!(o.max_series, 10);
    assert_eq!(o.samples, OVERFLOW_NAMES as u64 + 30);
    assert_eq!(o.by_name.len(), OVERFLOW_NAMES);
    assert_eq!(o.by_name["m10"], 1);
    assert_eq!(o.other_names, 30);
    assert_eq!(o.by_name.values().sum::<u64>() + o.other_names, o.samples);
}

#[test]
fn idle_series_are_forgotten_and_make_room() {
    let mut st = Store::new(2);
    put(&mut st, sample("a", counter(1.0)), NOW);
    put(
        &mut st,
        sample("b", counter(1.0)),
        NOW + (IDLE - 100) * 1000,
    );
    st.expire(NOW + IDLE * 1000);
    assert_eq!(st.len(), 1);
    put(&mut st, sample("c", counter(1.0)), NOW + IDLE * 1000);
    let v = st.view(NOW + IDLE * 1000 + 1000);
    assert_eq!(v.forgotten, 1);
    assert_eq!(v.overflow.samples, 0);
    assert_eq!(v.series.len(), 2);
}

#[test]
fn past_events_count_in_their_own_second() {
    let mut st = Store::new(100);
    // Replayed from the log: published 30 s and 59.5 s ago, read now.
    st.record_sample("web", &sample("hits", counter(2.0)), NOW - 30_000, NOW);
    st.record_sample("web", &sample("hits", counter(7.0)), NOW - 59_500, NOW);
    // The sample's own time wins over the event's.
    let mut own = sample("hits", counter(1.0));
    own.at_ms = Some(NOW - 10_000);
    st.record_sample("web", &own, NOW - 100, NOW);
    // Older than the minute: counted as too old, not in any second.
    st.record_sample("web", &sample("hits", counter(100.0)), NOW - 61_500, NOW);
    let v = st.view(NOW);
    let s = one(&v, "hits");
    assert_eq!(s.second.count, 0.0, "none in the last second");
    assert_eq!(s.minute.sum, 10.0);
    assert_eq!((s.points[0], s.points[30], s.points[50]), (7.0, 2.0, 1.0));
    assert_eq!(v.too_old, 1);
    // A clock ahead of ours counts now.
    st.record_sample(
        "web",
        &sample("hits", counter(4.0)),
        NOW + 60_000,
        NOW + 200,
    );
    assert_eq!(one(&st.view(NOW + 1000), "hits").second.sum, 4.0);
    // A second leaves the minute 60 s after it ended.
    st.expire(NOW + 1000);
    let later = st.view(NOW + 1000);
    assert_eq!(one(&later, "hits").minute.sum, 7.0, "the 59.5 s one left");
}
