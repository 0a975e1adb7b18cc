use super::*;

fn err(body: &str) -> IngestError {
    parse_events(body.as_bytes()).unwrap_err()
}

#[test]
fn one_and_many() {
    let one = parse_events(br#"{"type":"request","path":"/a","latency_ms":42}"#).unwrap();
    assert_eq!(
        one,
        vec![Metric::Request {
            path: "/a".into(),
            latency_ms: 42.0,
            status: 200
        }]
    );
    let many = parse_events(
        br#"[{"type":"db_query","query":"SELECT 1","duration_ms":1.5},
             {"type":"error","source":"db","message":"down"}]"#,
    )
    .unwrap();
    assert_eq!(many.len(), 2);
}

#[test]
fn errors_name_the_field() {
    let e = err(r#"{"type":"request","path":"/a","latency":42}"#);
    assert_eq!(e.field.as_deref(), Some("latency"), "{e}");
    assert!(e.to_string().contains("unknown field `latency`"), "{e}");

    let e = err(r#"{"type":"request","path":"/a"}"#);
    assert_eq!(e.field.as_deref(), Some("latency_ms"), "{e}");

    let e = err(r#"{"type":"request","path":"/a","latency_ms":"slow"}"#);
    assert_eq!(e.field.as_deref(), Some("latency_ms"), "{e}");

    let e = err(r#"{"type":"request","path":"/a","latency_ms":-1}"#);
    assert_eq!(e.field.as_deref(), Some("latency_ms"), "{e}");

    let e = err(r#"{"type":"request","path":"a","latency_ms":1}"#);
    assert_eq!(e.field.as_deref(), Some("path"), "{e}");

    let e = err(r#"{"type":"request","path":"/a","latency_ms":1,"status":42}"#);
    assert_eq!(e.field.as_deref(), Some("status"), "{e}");

    let e = err(r#"{"type":"metric"}"#);
    assert_eq!(e.field.as_deref(), Some("type"), "{e}");

    let e = err(r#"{"path":"/a"}"#);
    assert_eq!(e.field.as_deref(), Some("type"), "{e}");

    let e = err(r#"{"type":"error","source":"a.b","message":"x"}"#);
    assert_eq!(e.field.as_deref(), Some("source"), "{e}");

    let e = err(
        r#"[{"type":"error","source":"db","message":"x"},{"type":"db_query","query":"","duration_ms":1}]"#,
    );
    assert_eq!(
        (e.index, e.field.as_deref()),
        (Some(1), Some("query")),
        "{e}"
    );
    assert!(e.to_string().starts_with("event 1: field `query`"), "{e}");
}

#[test]
fn the_generic_form_is_one_metric_per_topic() {
    let m = parse_events(
        br#"{"type":"samples","source":"shop","samples":[
            {"name":"orders","labels":{"region":"eu"},"kind":"counter","value":3},
            {"name":"pool.size","kind":"gauge","value":12,"at_ms":1700000000000},
            {"name":"orders","kind":"counter","value":1},
            {"name":"lat","kind":"observation","value":4.5,"weight":2},
            {"name":"h","kind":"histogram","bounds":[1,5],"counts":[1,2,0],"sum":7},
            {"name":"users","kind":"set","member":"alice"},
            {"name":"oops","kind":"error","message":"down"},
            {"name":"q","kind":"gauge_delta","value":-2}
        ]}"#,
    )
    .unwrap();
    assert_eq!(sample_count(&m), 8);
    assert_eq!(m.len(), 7, "orders twice share one topic: {m:?}");
    use busline::Event as _;
    assert_eq!(m[0].topic(), "metrics.shop.orders");
    assert_eq!(m[1].topic(), "metrics.shop.pool.size");
    let Metric::Samples { source, samples } = &m[0] else {
        panic!("{m:?}")
    };
    assert_eq!((source.as_str(), samples.len()), ("shop", 2));
    assert_eq!(samples[0].labels["region"], "eu");
    assert_eq!(samples[0].value, SampleValue::Counter { value: 3.0 });
}

#[test]
fn generic_form_errors_name_the_event_and_the_field() {
    let one = |sample: &str| {
        format!(
            r#"[{{"type":"error","source":"db","message":"x"}},{{"type":"samples","source":"svc","samples":[{{"name":"ok","kind":"counter","value":1}},{sample}]}}]"#
        )
    };
    for (sample, field, says) in [
        (
            r#"{"name":"x","kind":"meter","value":1}"#,
            "samples[1].kind",
            "unknown kind \"meter\"",
        ),
        (
            r#"{"name":"","kind":"counter","value":1}"#,
            "samples[1].name",
            "must not be empty",
        ),
        (
            r#"{"name":"x","kind":"counter"}"#,
            "samples[1].value",
            "missing",
        ),
        (
            r#"{"name":"x","kind":"counter","value":"1"}"#,
            "samples[1].value",
            "expected a number",
        ),
        (
            r#"{"name":"x","kind":"counter","value":1,"member":"a"}"#,
            "samples[1].member",
            "no field `member`",
        ),
        (
            r#"{"name":"x","kind":"counter","value":1,"colour":"a"}"#,
            "samples[1].colour",
            "unknown field",
        ),
        (
            r#"{"name":"x","kind":"observation","value":1,"weight":0}"#,
            "samples[1].weight",
            "> 0",
        ),
        (
            r#"{"name":"x","kind":"histogram","bounds":[2,1],"counts":[1,1,1]}"#,
            "samples[1].bounds",
            "ascending",
        ),
        (
            r#"{"name":"x","kind":"histogram","bounds":[1],"counts":[1]}"#,
            "samples[1].counts",
            "one more count",
        ),
        (
            r#"{"name":"x","kind":"set"}"#,
            "samples[1].member",
            "must not be empty",
        ),
        (
            r#"{"name":"x","labels":{"":"v"},"kind":"counter","value":1}"#,
            "samples[1].labels",
            "must not be empty",
        ),
        (r#"7"#, "samples[1]", "expected a JSON object"),
    ] {
        let e = err(&one(sample));
        assert_eq!(
            (e.index, e.field.as_deref()),
            (Some(1), Some(field)),
            "{sample}: {e}"
        );
        assert!(e.to_string().contains(says), "{sample}: {e}");
    }
    let e = err(
        r#"{"type":"samples","source":"a.b","samples":[{"name":"x","kind":"counter","value":1}]}"#,
    );
    assert_eq!(e.field.as_deref(), Some("source"), "{e}");
    let e = err(r#"{"type":"samples","source":"a","samples":[]}"#);
    assert_eq!(e.field.as_deref(), Some("samples"), "{e}");
    let many = vec![r#"{"name":"x","kind":"counter","value":1}"#; MAX_SAMPLES + 1].join(",");
    let e = err(&format!(
        r#"{{"type":"samples","source":"a","samples":[{many}]}}"#
    ));
    assert!(e.to_string().contains("at most 1000"), "{e}");
    assert!(finite("value", f64::INFINITY).is_err());
}

#[test]
fn malformed() {
    assert!(err("{").to_string().contains("malformed JSON"));
    assert!(err("").to_string().contains("empty body"));
    assert!(err("[]").to_string().contains("no events"));
    assert!(err("42").to_string().contains("expected a JSON object"));
}
