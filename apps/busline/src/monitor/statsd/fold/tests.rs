use super::*;
use crate::monitor::sample::Sample;
use crate::monitor::series::Store;
use crate::monitor::statsd::parse::parse_datagram;

const NOW: u64 = 1_000_000_000; // a whole second, in ms

/// Datagrams of every kind of line: sampled counters, timers, gauges with
/// deltas, sets, tags in two orders and repeated keys, `|T` times, two
/// sources, malformed lines and lines past the limits.
fn datagrams() -> Vec<Vec<u8>> {
    (0..12)
        .map(|d| {
            let mut lines = Vec::new();
            for j in 0..30 {
                let v = (d * 30 + j) % 41;
                lines.push(match (d + j) % 14 {
                    0 => "req:1|c|#route:/a,service:shop".to_owned(),
                    1 => format!("lat:{v}.5|ms|@0.25|#route:/a,service:shop"),
                    2 => "req:1|c|#service:shop,route:/a".to_owned(),
                    3 => "q:+1|g|#service:shop".to_owned(),
                    4 => format!("q:{v}|g|#service:shop"),
                    5 => "q:-2|g|#service:shop".to_owned(),
                    6 => format!("size:{v}|h|#a:1,b:2"),
                    7 => format!("size:{v}|d|#b:2,a:1"),
                    8 => format!("users:u{}|s", v % 7),
                    9 => format!("old:{v}|c|T{}", NOW / 1000 - 5 + (v as u64 % 3)),
                    10 => "hits:1|c|@0.1".to_owned(),
                    11 => format!("bad:{v}x|c"),
                    12 => "rare:1|ms|@0.000000000001".to_owned(),
                    _ => "dup:1|c|#k:1,k:2".to_owned(),
                });
            }
            lines.join("\n").into_bytes()
        })
        .collect()
}

/// The samples of `datagrams` line by line, as events of one sample each.
fn line_by_line(datagrams: &[Vec<u8>], status: &Protocol) -> Vec<Metric> {
    let mut out = Vec::new();
    for d in datagrams {
        parse_datagram(
            d,
            |line| {
                let sample = line.to_sample();
                match crate::monitor::sample_check::check(&sample) {
                    Ok(()) => out.push(Metric::Samples {
                        source: line.source().to_owned(),
                        samples: vec![sample],
                    }),
                    Err(e) => status.malformed(OVER_LIMITS, &e.reason, 1),
                }
            },
            |reason, text| status.malformed(reason.as_str(), text, 1),
        );
    }
    out
}

fn folded(datagrams: &[Vec<u8>], status: &Protocol) -> Vec<(String, Metric)> {
    let mut fold = Fold::default();
    for d in datagrams {
        fold.datagram(d, status);
    }
    fold.finish()
}

/// The samples of each series in order, by `source/series`.
fn by_series<'a>(metrics: impl Iterator<Item = &'a Metric>) -> Vec<(String, Vec<Sample>)> {
    let mut out: Vec<(String, Vec<Sample>)> = Vec::new();
    for m in metrics {
        m.for_each_sample(|s| {
            let key = format!("{}/{}@{:?}", m.source(), s.series(), s.at_ms);
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s.clone()),
                None => out.push((key, vec![s.clone()])),
            }
        });
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_folded_burst_gives_every_series_the_numbers_of_its_lines() {
    let d = datagrams();
    let (one, all) = (Protocol::default(), Protocol::default());
    let lines = line_by_line(&d, &one);
    let runs = folded(&d, &all);
    // The same samples per series, in the same order.
    assert_eq!(
        by_series(lines.iter()),
        by_series(runs.iter().map(|(_, m)| m))
    );
    // The same statistics in the store: counts, sums, rates, percentiles,
    // gauges (deltas in order), distinct members.
    let (mut a, mut b) = (Store::new(1000), Store::new(1000));
    for m in &lines {
        a.record(m, NOW - 500, NOW - 500);
    }
    for (_, m) in &runs {
        b.record(m, NOW - 500, NOW - 500);
    }
    let (va, vb) = (a.view(NOW + 1000).series, b.view(NOW + 1000).series);
    assert_eq!(va.len(), 8, "{va:#?}");
    assert_eq!(va, vb);
    // The same counts of lines taken and refused, by reason.
    let (so, sa) = (one.snapshot(), all.snapshot());
    let taken: usize = runs.iter().map(|(_, m)| m.sample_count()).sum();
    assert_eq!(taken, lines.len());
    assert_eq!(sa.accepted, taken as u64);
    assert_eq!(sa.received, d.len() as u64);
    assert_eq!(so.malformed_by_reason, sa.malformed_by_reason);
    assert!(sa.malformed > 0);
}

#[test]
fn one_event_per_source_and_topic_in_the_order_topics_came() {
    let status = Protocol::default();
    let runs = folded(
        &[
            b"b:1|c\na:2|c|#service:web\nb:3|c|#x:1\n".to_vec(),
            b"a:4|c\nb:5|c\nc d:6|c\nc_d:7|c\n".to_vec(),
        ],
        &status,
    );
    let got: Vec<(String, &str, Vec<String>)> = runs
        .iter()
        .map(|(t, m)| {
            let Metric::Runs { source, runs } = m else {
                panic!("{m:?}")
            };
            let names = runs
                .iter()
                .map(|r| format!("{}{:?}", r.name, r.values.len()))
                .collect();
            (t.clone(), source.as_str(), names)
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "metrics.statsd.b".to_owned(),
                "statsd",
                vec!["b2".to_owned(), "b1".to_owned()]
            ),
            ("metrics.web.a".to_owned(), "web", vec!["a1".to_owned()]),
            (
                "metrics.statsd.a".to_owned(),
                "statsd",
                vec!["a1".to_owned()]
            ),
            // Names that differ only where a topic cannot hold a character share one.
            (
                "metrics.statsd.c_d".to_owned(),
                "statsd",
                vec!["c d1".to_owned(), "c_d1".to_owned()]
            ),
        ]
    );
    assert_eq!(status.snapshot().accepted, 7);
    // The fold starts over after each burst.
    let mut fold = Fold::default();
    fold.datagram(b"a:1|c", &status);
    assert_eq!(fold.finish().len(), 1);
    assert!(fold.finish().is_empty());
}

#[test]
fn labels_past_the_limits_refuse_each_of_their_lines() {
    let status = Protocol::default();
    let tags: Vec<String> = (0..40).map(|i| format!("k{i}:v")).collect();
    let line = format!("wide:1|c|#{}", tags.join(","));
    let runs = folded(&[format!("{line}\nok:1|c\n{line}").into_bytes()], &status);
    let taken: usize = runs.iter().map(|(_, m)| m.sample_count()).sum();
    assert_eq!(taken, 1);
    let s = status.snapshot();
    assert_eq!(s.malformed_by_reason[OVER_LIMITS], 2, "{s:?}");
}

/// Whatever a burst brings, one event holds at most `EVENT_BYTES`: a flood
/// of new series is cut between runs, one busy series inside its run, and
/// every value is still there, in order.
#[test]
fn events_hold_bounded_bytes_and_every_value_in_order() {
    let status = Protocol::default();
    let flood: Vec<Vec<u8>> = (0..256)
        .map(|d| {
            (0..20)
                .map(|i| format!("flood.hits:1|c|#user:u{}\n", d * 20 + i))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    let busy: Vec<Vec<u8>> = (0..256)
        .map(|d| {
            (0..20)
                .map(|i| format!("busy:{}|g\n", d * 20 + i))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    for burst in [flood, busy] {
        let metrics = folded(&burst, &status);
        assert!(metrics.len() > 1, "one burst, several events");
        let mut samples = Vec::new();
        for (_, m) in &metrics {
            let Metric::Runs { runs, .. } = m else {
                panic!("{m:?}")
            };
            let bytes: usize = runs.iter().map(Run::bytes).sum();
            assert!(bytes <= EVENT_BYTES, "{bytes} bytes in one event");
            m.for_each_sample(|s| samples.push(s.clone()));
        }
        assert_eq!(samples.len(), 256 * 20);
        if samples[0].name == "busy" {
            let values: Vec<Value> = samples.into_iter().map(|s| s.value).collect();
            let sent: Vec<Value> = (0..256 * 20)
                .map(|v| Value::Gauge { value: v as f64 })
                .collect();
            assert_eq!(values, sent);
        }
    }
}

/// Not a test: the listener's cost per line, folded and line by line
/// (`cargo test --release -p busline-cli fold_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn fold_speed() {
    let d: Vec<Vec<u8>> = (0..64)
        .map(|d| {
            (0..25)
                .map(|j| {
                    let v = (d * 25 + j) % 97;
                    match (d + j) % 8 {
                        _ if j == 0 => format!("bench.bad:{v}x|c"),
                        0 => "bench.requests:1|c|#route:/api,service:shop".to_owned(),
                        1 => format!("bench.latency:{v}.5|ms|#route:/api,service:shop"),
                        2 => "bench.sampled:1|c|@0.5|#service:shop".to_owned(),
                        3 => "bench.queue:+1|g|#service:shop".to_owned(),
                        4 => format!("bench.pool:{v}|g|#service:shop"),
                        5 => format!("bench.size:{v}|h|#service:shop"),
                        6 => format!("bench.users:u{v}|s|#service:shop"),
                        _ => "bench.cache.hits:1|c".to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect();
    // Time on the CPU (the machine may be shared), in ns.
    let cpu = || -> u128 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    };
    let status = Protocol::default();
    let rounds = 200;
    for burst in [16, 64, 160, 256] {
        let t = cpu();
        let mut fold = Fold::default();
        for r in 0..rounds * 4 {
            for (i, x) in d.iter().enumerate() {
                fold.datagram(x, &status);
                if (r * 64 + i) % burst == burst - 1 {
                    drop(std::hint::black_box(fold.finish()));
                }
            }
        }
        let ns = (cpu() - t) as f64 / (rounds * 4 * 64 * 25) as f64;
        eprintln!("folded, bursts of {burst} datagrams: {ns:.1} ns per line");
    }
    let t = cpu();
    for _ in 0..rounds {
        drop(std::hint::black_box(line_by_line(&d, &status)));
    }
    let ns = (cpu() - t) as f64 / (rounds * 64 * 25) as f64;
    eprintln!("line by line: {ns:.1} ns per line");
}
