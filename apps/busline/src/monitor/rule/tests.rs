use super::*;

fn rules(text: &str) -> Result<Vec<Rule>> {
    #[derive(Deserialize)]
    struct F {
        alert: Vec<toml::Table>,
    }
    let f: F = toml::from_str(text).unwrap();
    parse_rules(&f.alert)
}

fn error(text: &str) -> String {
    rules(text).unwrap_err().to_string()
}

#[test]
fn a_full_rule_reads_back_as_an_expression() {
    let r = rules(
        r#"
        [[alert]]
        name = "slow-api"
        metric = "http.server.duration"
        source = "checkout"
        labels = { route = "/api/*", status = "!2*" }
        function = "p99"
        window = "1m30s"
        op = ">="
        threshold = 250.5
        for = "30s"
        "#,
    )
    .unwrap();
    let r = &r[0];
    assert_eq!(r.function, Function::P99);
    assert_eq!(r.window, Duration::from_secs(90));
    assert_eq!(r.hold, Duration::from_secs(30));
    assert_eq!(
        r.expr(),
        r#"p99(http.server.duration{source="checkout",route="/api/*",status!="2*"} [1m30s]) >= 250.5 for 30s"#
    );
}

#[test]
fn defaults_window_op_and_for_and_up_needs_no_threshold() {
    let r = rules(
        "[[alert]]\nname = \"a\"\nmetric = \"x\"\nfunction = \"count\"\nthreshold = 3\n\
         [[alert]]\nname = \"targets\"\nfunction = \"up\"\nwindow = 30\n",
    )
    .unwrap();
    assert_eq!(r[0].expr(), "count(x [1m]) > 3");
    assert_eq!(r[1].expr(), "up(up [30s]) > 0");
    assert_eq!(Rule::default_errors(10).expr(), "count(error [1m]) > 10");
}

#[test]
fn errors_name_the_rule_and_the_key() {
    let base = "name = \"r\"\nmetric = \"x\"\nthreshold = 1\n";
    for (body, want) in [
        (
            "function = \"p95\"",
            "key `function`: unknown function \"p95\"",
        ),
        (
            "function = \"max\"\nop = \"=>\"",
            "key `op`: unknown comparison \"=>\"",
        ),
        (
            "function = \"max\"\nwindow = \"1 minute\"",
            "key `window`: \"1 minute\": unknown unit",
        ),
        (
            "function = \"max\"\nwindow = \"fast\"",
            "key `window`: \"fast\" is not a duration",
        ),
        (
            "function = \"max\"\nwindow = \"10ms\"",
            "key `window`: 10ms is too short",
        ),
        (
            "function = \"max\"\nwindow = \"48h\"",
            "key `window`: \"48h\" is too long",
        ),
        (
            "function = \"max\"\nfor = \"soon\"",
            "key `for`: \"soon\" is not a duration",
        ),
        (
            "function = \"max\"\nfunctoin = \"max\"",
            "unknown field `functoin`",
        ),
        (
            "function = 3",
            "key `function`: invalid type: integer `3`, expected a string",
        ),
        (
            "function = \"max\"\nlabels = { route = 5 }",
            "key `labels.route`: invalid type",
        ),
    ] {
        let e = error(&format!("[[alert]]\nname = \"ok\"\nmetric = \"x\"\nfunction = \"count\"\nthreshold = 1\n[[alert]]\n{base}{body}\n"));
        assert!(e.starts_with("alert rule #2 (\"r\"): "), "{body}: {e}");
        assert!(e.contains(want), "{body}: {e}");
    }
    let e = error("[[alert]]\nmetric = \"x\"\nfunction = \"max\"\nthreshold = 1\n");
    assert!(e.starts_with("alert rule #1: missing field `name`"), "{e}");
    let e = error("[[alert]]\nname = \"x\"\nfunction = \"max\"\nthreshold = 1\n");
    assert!(e.contains("#1 (\"x\"): key `metric`: missing"), "{e}");
    let e = error("[[alert]]\nname = \"x\"\nmetric = \"m\"\nfunction = \"max\"\n");
    assert!(e.contains("#1 (\"x\"): key `threshold`: missing"), "{e}");
    let e = error(
        "[[alert]]\nname = \"x\"\nmetric = \"m\"\nfunction = \"max\"\nthreshold = 1\n\
         [[alert]]\nname = \"x\"\nmetric = \"n\"\nfunction = \"max\"\nthreshold = 1\n",
    );
    assert!(
        e.contains("#2 (\"x\"): key `name`: \"x\" is already the name of alert rule #1"),
        "{e}"
    );
    let e = error(
        "[[alert]]\nname = \"error-rate\"\nmetric = \"m\"\nfunction = \"max\"\nthreshold = 1\n",
    );
    assert!(
        e.contains("key `name`: \"error-rate\" is the default rule's name"),
        "{e}"
    );
}

#[test]
fn durations() {
    for (t, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("1m", 60_000),
        ("1m30s", 90_000),
        ("2h", 7_200_000),
        ("1.5s", 1500),
        ("0", 0),
        ("0s", 0),
    ] {
        assert_eq!(parse_duration(t).unwrap(), Duration::from_millis(ms), "{t}");
        assert_eq!(
            parse_duration(&human_duration(Duration::from_millis(ms))).unwrap(),
            Duration::from_millis(ms)
        );
    }
    for bad in ["", "s", "5", "5x", "1m-", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(num(10.0), "10");
    assert_eq!(num(0.5), "0.5");
    assert_eq!(num(312.4567), "312.457");
    assert_eq!(num(-0.0), "0");
}
