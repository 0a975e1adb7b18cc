use super::file::alert_rule_at;
use super::settings::StatsdSettings;
use super::*;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

fn with_file(toml: &str, args: MonitorArgs) -> Result<Settings> {
    let dir = std::env::temp_dir().join(format!(
        "busline-config-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("monitor.toml");
    std::fs::write(&path, toml).unwrap();
    let r = Settings::resolve(&MonitorArgs {
        config: Some(path),
        ..args
    });
    std::fs::remove_dir_all(&dir).ok();
    r
}

#[test]
fn defaults() {
    let s = Settings::resolve(&MonitorArgs::default()).unwrap();
    assert_eq!(s.interval, Duration::from_millis(100));
    assert_eq!(s.alert_threshold, 10);
    assert_eq!(s.web, Some(DEFAULT_WEB.parse().unwrap()));
    assert!(s.simulate);
    assert_eq!(s.data_dir, Some(PathBuf::from(DEFAULT_DATA_DIR)));
    assert_eq!(s.log_retention_age, Duration::from_secs(3600));
}

/// Without --nats a process must both publish and read metrics.
#[test]
fn a_module_set_that_could_do_nothing_is_refused() {
    for (modules, what) in [
        ("dashboard", "nothing in this process publishes"),
        ("logger,alerter", "nothing in this process publishes"),
        ("publishers", "nothing in this process reads"),
    ] {
        let args = MonitorArgs {
            modules: Some(modules.into()),
            ..MonitorArgs::default()
        };
        let e = Settings::resolve(&args).unwrap_err().to_string();
        assert!(e.contains(what), "{modules}: {e}");
        let args = MonitorArgs {
            modules: Some(modules.into()),
            nats: Some("nats://127.0.0.1:4222".into()),
            ..MonitorArgs::default()
        };
        assert!(Settings::resolve(&args).is_ok(), "{modules} with --nats");
    }
}

#[test]
fn modules_and_nats() {
    let m = Modules::parse("publishers").unwrap();
    assert!(m.web_sim && m.db_sim && !m.consumes() && !m.web);
    let m = Modules::parse("dashboard, logger,alerter").unwrap();
    assert_eq!(m.consumer_key(), "alerter-dashboard-logger");
    assert!(!m.web_sim && !m.web);
    let e = Modules::parse("dashboard,loger").unwrap_err().to_string();
    assert!(e.contains("\"loger\""), "{e}");
    let s = Settings::resolve(&MonitorArgs::default()).unwrap();
    assert_eq!(s.modules, Modules::ALL);
    assert!(s.nats.is_none());
    let e = Settings::resolve(&MonitorArgs {
        nats: Some("nats://127.0.0.1:4222".into()),
        nats_user: Some("a".into()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--nats-password"), "{e}");
    let s = with_file(
        "nats = \"nats://127.0.0.1:4222\"\nnats-token = \"t0ken\"\nmodules = \"web-sim\"\n",
        MonitorArgs::default(),
    )
    .unwrap();
    let n = s.nats.unwrap();
    assert!(matches!(n.auth, busline_nats::Auth::Token(_)) && !n.core);
    assert!(s.modules.web_sim && !s.modules.db_sim);
}

#[test]
fn statsd_is_on_by_default_and_can_be_moved_or_turned_off() {
    let statsd = |a: MonitorArgs| Settings::resolve(&a).unwrap().statsd;
    assert_eq!(
        statsd(MonitorArgs::default()),
        Some(StatsdSettings {
            addr: "127.0.0.1:8125".parse().unwrap(),
            explicit: false
        })
    );
    assert_eq!(
        statsd(MonitorArgs {
            statsd: Some("127.0.0.1:9125".into()),
            ..Default::default()
        }),
        Some(StatsdSettings {
            addr: "127.0.0.1:9125".parse().unwrap(),
            explicit: true
        })
    );
    let off = MonitorArgs {
        no_statsd: true,
        ..Default::default()
    };
    assert_eq!(statsd(off), None);
    let no_ingest = MonitorArgs {
        modules: Some("publishers,dashboard".into()),
        ..Default::default()
    };
    assert_eq!(statsd(no_ingest), None);
    let s = with_file("statsd = \"localhost:9200\"\n", MonitorArgs::default()).unwrap();
    assert_eq!(s.statsd.unwrap().addr, "127.0.0.1:9200".parse().unwrap());
    let s = with_file("no-statsd = true\n", MonitorArgs::default()).unwrap();
    assert_eq!(s.statsd, None);
    let e = Settings::resolve(&MonitorArgs {
        statsd: Some("udp:8125".into()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("statsd address \"udp:8125\""), "{e}");
}

#[test]
fn ingest_alone_publishes() {
    let m = Modules::parse("ingest").unwrap();
    assert!(m.publishes() && !m.consumes());
    assert!(Modules::parse("all").unwrap().ingest);
    let args = MonitorArgs {
        modules: Some("ingest".into()),
        ..MonitorArgs::default()
    };
    let e = Settings::resolve(&args).unwrap_err().to_string();
    assert!(e.contains("nothing in this process reads"), "{e}");
}

#[test]
fn the_data_dir_can_be_turned_off() {
    let off = |a: MonitorArgs| Settings::resolve(&a).unwrap().data_dir;
    assert_eq!(
        off(MonitorArgs {
            no_data_dir: true,
            ..Default::default()
        }),
        None
    );
    assert_eq!(
        off(MonitorArgs {
            data_dir: Some(PathBuf::new()),
            ..Default::default()
        }),
        None
    );
    let s = with_file("data-dir = \"/tmp/x\"\n", MonitorArgs::default()).unwrap();
    assert_eq!(s.data_dir, Some(PathBuf::from("/tmp/x")));
}

#[test]
fn options_override_the_file() {
    let s = with_file(
        "interval-ms = 50\nalert-threshold = 3\nerror-rate = 0.5\n",
        MonitorArgs {
            alert_threshold: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.interval, Duration::from_millis(50));
    assert_eq!(s.alert_threshold, 7);
    assert_eq!(s.error_rate, 0.5);
}

#[test]
fn alert_rules_come_from_the_file_and_their_errors_name_rule_and_key() {
    let rule = "[[alert]]\nname = \"slow\"\nmetric = \"api.latency\"\nfunction = \"p99\"\nthreshold = 250\n";
    let s = with_file(&format!("interval-ms = 50\n{rule}"), MonitorArgs::default()).unwrap();
    assert_eq!(s.alert_rules.len(), 1);
    assert_eq!(s.alert_rules[0].expr(), "p99(api.latency [1m]) > 250");
    let bad = |text: &str| {
        with_file(text, MonitorArgs::default())
            .unwrap_err()
            .to_string()
    };
    // A key the rule does not know, a function, a window.
    let e = bad(&format!("{rule}[[alert]]\nname = \"b\"\nmetric = \"x\"\nfunction = \"max\"\nthreshold = 1\ntreshold = 2\n"));
    assert!(
        e.contains("monitor.toml: alert rule #2 (\"b\"): key `treshold`: unknown field `treshold`"),
        "{e}"
    );
    let e = bad(&rule.replace("p99", "p95"));
    assert!(
        e.contains("alert rule #1 (\"slow\"): key `function`: unknown function \"p95\""),
        "{e}"
    );
    // TOML that does not parse: the rule's number and the line.
    let e = bad(&format!("{rule}[[alert]]\nname = \"b\"\nthreshold = \n"));
    assert!(
        e.contains("(in alert rule #2)") && e.contains("threshold ="),
        "{e}"
    );
    let e = bad("interval-ms = \n[[alert]]\nname = \"b\"\n");
    assert!(!e.contains("alert rule"), "{e}");
    let text = "[[alert]]\na\n[[ alert ]] # x\nb\n[x]\nc\n";
    assert_eq!(alert_rule_at(text, text.find('a').unwrap()), Some(1));
    assert_eq!(alert_rule_at(text, text.find('b').unwrap()), Some(2));
    assert_eq!(alert_rule_at(text, text.find('c').unwrap()), None);
    let text = "[[alert]]\na\n[[alerts]]\nb\n";
    assert_eq!(alert_rule_at(text, text.find('b').unwrap()), None);
    // A sub-table of a rule is still that rule (review #17).
    let text = "[[alert]]\nx = 1\n[[alert]]\n[alert.labels]\nzz = 1\n[web]\nqq = 1\n";
    assert_eq!(alert_rule_at(text, text.find("zz").unwrap()), Some(2));
    assert_eq!(alert_rule_at(text, text.find("qq").unwrap()), None);
}

#[test]
fn max_series_and_tui_from_the_file() {
    let s = with_file("max-series = 50\ntui = true\n", MonitorArgs::default()).unwrap();
    assert_eq!((s.max_series, s.tui), (50, true));
    let s = Settings::resolve(&MonitorArgs::default()).unwrap();
    assert_eq!((s.max_series, s.tui), (10_000, false));
    let e = with_file("max-series = 0\n", MonitorArgs::default()).unwrap_err();
    assert!(e.to_string().contains("max-series"), "{e}");
}

#[test]
fn unknown_key_is_named() {
    let e = with_file("interval_ms = 50\n", MonitorArgs::default()).unwrap_err();
    assert!(e.to_string().contains("interval_ms"), "{e}");
}

#[test]
fn non_loopback_needs_a_token() {
    let e = Settings::resolve(&MonitorArgs {
        web: Some("0.0.0.0:7878".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("--token"), "{e}");
    Settings::resolve(&MonitorArgs {
        web: Some("0.0.0.0:7878".into()),
        token: Some("s3cret-token".into()),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn bad_values() {
    let bad = |a: MonitorArgs| Settings::resolve(&a).unwrap_err().to_string();
    assert!(bad(MonitorArgs {
        error_rate: Some(2.0),
        ..Default::default()
    })
    .contains("error-rate"));
    assert!(bad(MonitorArgs {
        alert_webhook: Some("ftp://x".into()),
        ..Default::default()
    })
    .contains("alert-webhook"));
    assert!(bad(MonitorArgs {
        web: Some("nonsense".into()),
        ..Default::default()
    })
    .contains("web address"));
}
