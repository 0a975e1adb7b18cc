//! The bus's counters reach a real `metrics` recorder with the right values.

use busline::{Bus, RecvError};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn stats_export_to_a_metrics_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = Bus::<u32>::new();
            let mut dash = bus
                .subscriber("m.*")
                .lossy(2)
                .name("dashboard")
                .subscribe()
                .unwrap();
            let _log = bus.subscriber("m.*").name("logger").subscribe().unwrap();
            for i in 0..5 {
                bus.publish_to("m.a", i).await.unwrap();
            }
            bus.publish_to("other", 9).await.unwrap();
            assert_eq!(dash.recv().await.unwrap_err(), RecvError::Lagged(3));
            bus.stats().export();
        });
    });
    let snap = snapshotter.snapshot().into_vec();
    let get = |name: &str, sub: Option<&str>| {
        snap.iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && sub.is_none_or(|s| {
                        k.key()
                            .labels()
                            .any(|l| l.key() == "subscriber" && l.value() == s)
                    })
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => f64::NAN,
            })
            .unwrap_or_else(|| panic!("metric {name} {sub:?} not exported"))
    };
    assert_eq!(get("busline_published_total", None), 6.0);
    assert_eq!(get("busline_unrouted_total", None), 1.0);
    assert_eq!(get("busline_dropped_total", None), 3.0);
    assert_eq!(get("busline_delivered_total", None), 10.0);
    assert_eq!(
        get("busline_subscriber_dropped_total", Some("dashboard")),
        3.0
    );
    assert_eq!(get("busline_subscriber_dropped_total", Some("logger")), 0.0);
    assert_eq!(get("busline_subscriber_queued", Some("logger")), 5.0);
}
