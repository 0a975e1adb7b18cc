//! Configuration errors name the key, module names are checked, the module
//! context behaves like the bus, and the conformance suite reports what it
//! checks.

use std::time::Duration;

use busline::conformance::{run, Features, Harness, Probe};
use busline::{BoxError, Bus, Config, Context, Message, Module, Runtime, RuntimeError};
use futures::FutureExt;

// ----- configuration errors name the key ----------------------------------------

#[derive(serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Alerter {
    threshold: u32,
    #[serde(default)]
    retry: Option<Retry>,
}

#[derive(serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Retry {
    attempts: u32,
}

#[test]
fn a_bad_value_names_its_key() {
    for (toml, key) in [
        ("enabled = \"no\"", "`enabled`"),
        ("restart = \"sometimes\"", "`restart`"),
        ("max_restarts = -1", "`max_restarts`"),
    ] {
        let c = Config::from_toml(&format!("[modules.ui]\n{toml}\n")).unwrap();
        let e = c.settings("ui").unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("[modules.ui]"), "{toml}: {e}");
    }
    let c = Config::from_toml("[modules.alerter]\nthreshold = \"high\"\n").unwrap();
    let e = c.module::<Alerter>("alerter").unwrap_err().to_string();
    assert!(e.contains("`threshold`"), "{e}");
    let c =
        Config::from_toml("[modules.alerter]\nthreshold = 1\nretry = { attempts = -3 }\n").unwrap();
    let e = c.module::<Alerter>("alerter").unwrap_err().to_string();
    assert!(e.contains("`retry.attempts`"), "{e}");
}

#[test]
fn an_unknown_nested_key_names_its_table() {
    let c =
        Config::from_toml("[modules.alerter]\nthreshold = 1\nretry = { atempts = 3 }\n").unwrap();
    let e = c.module::<Alerter>("alerter").unwrap_err().to_string();
    assert!(e.contains("`retry.atempts`"), "{e}");
}

#[derive(Clone)]
struct Configured(#[allow(dead_code)] Alerter);

impl Module<u32> for Configured {
    fn name(&self) -> &str {
        "alerter"
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_runtime_error_names_the_bad_key() {
    let config = Config::from_toml("[modules.alerter]\nthreshold = -5\n").unwrap();
    let mut rt = Runtime::new(Bus::<u32>::new())
        .handle_signals(false)
        .with_config(config);
    rt.add_configured("alerter", Configured);
    let e = rt.run().await.unwrap_err();
    assert!(matches!(e, RuntimeError::Config(_)), "{e}");
    assert!(e.to_string().contains("`threshold`"), "{e}");
}

// ----- a module's recv is cancel safe in a queue group ----------------------------

/// A module's `recv` given up (a `select!` on a timer) leaves no stale
/// wake-up in its queue group: the member still waiting gets the next job.
#[tokio::test(start_paused = true)]
async fn a_cancelled_module_recv_does_not_strand_the_next_job() {
    let bus: Bus<u32> = Bus::new();
    let a = Context::detached("a", bus.clone());
    let b = Context::detached("b", bus.clone());
    let mut sa = a.subscriber("jobs").queue("workers").subscribe().unwrap();
    let mut sb = b.subscriber("jobs").queue("workers").subscribe().unwrap();
    assert!(sa.recv().now_or_never().is_none()); // waits, then gives up
    let waiting = tokio::spawn(async move { sb.recv().await.map(|e| e.payload) });
    tokio::time::sleep(Duration::from_millis(1)).await;
    bus.publish_to("jobs", 7).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(matches!(got, Ok(Ok(Ok(7)))), "{got:?}");
}

// ----- module names -------------------------------------------------------------

#[derive(Clone)]
struct Named(String);

impl Module<u32> for Named {
    fn name(&self) -> &str {
        &self.0
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A name that is one valid token but too long for its
/// `$sys.module.<name>.restarting` topic is refused, naming why (its
/// lifecycle events were silently not published).
#[tokio::test(start_paused = true)]
async fn a_name_too_long_for_its_system_topics_is_refused() {
    let name = "m".repeat(1010);
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    rt.add(Named(name));
    match rt.run().await {
        Err(e @ RuntimeError::InvalidName { .. }) => {
            assert!(e.to_string().contains("restarting"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // The longest allowed name still gets its events.
    let name = "m".repeat(1024 - "$sys.module..restarting".len());
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    let mut sys = rt.system_bus().subscribe("$sys.module.>").unwrap();
    rt.add(Named(name.clone()));
    rt.run().await.unwrap();
    let e = sys.try_recv().unwrap().expect("started");
    assert_eq!(e.topic.as_str(), format!("$sys.module.{name}.started"));
}

// ----- the conformance suite catches a misrouted wildcard -----------------------

/// Two buses; what is published on `a` under `conformance.>` is forwarded
/// to `b`, and with `misroute` `conformance.other.*` arrives as
/// `conformance.wild.other.*` (a transport bug).
struct Forwarding {
    a: Bus<Probe>,
    b: Bus<Probe>,
}

fn forwarding(misroute: bool) -> Forwarding {
    let (a, b): (Bus<Probe>, Bus<Probe>) = (Bus::new(), Bus::new());
    let mut from = a
        .subscriber("conformance.>")
        .lossless(4096)
        .subscribe()
        .unwrap();
    let to: Bus<Probe> = b.clone();
    tokio::spawn(async move {
        while let Ok(env) = from.recv().await {
            let mut topic = env.topic.to_string();
            if let Some(rest) = topic
                .strip_prefix("conformance.other.")
                .filter(|_| misroute)
            {
                topic = format!("conformance.wild.other.{rest}");
            }
            let mut msg = Message::new(env.payload.clone())
                .topic(topic)
                .id(env.id)
                .correlation_id(env.correlation_id);
            if let Some(s) = &env.source {
                msg = msg.source(s.clone());
            }
            if let Some(c) = env.causation_id() {
                msg = msg.causation_id(c);
            }
            for (k, v) in env.headers() {
                msg = msg.header(k.clone(), v.clone());
            }
            let _ = to.send(msg).await;
        }
    });
    Forwarding { a, b }
}

impl Harness for Forwarding {
    fn publisher(&self) -> Bus<Probe> {
        self.a.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.b.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_suite_fails_a_backend_delivering_to_a_non_matching_wildcard() {
    let features = Features::in_memory().with_request_reply(false);
    let report = run(&mut forwarding(false), features).await;
    assert!(report.failed.is_empty(), "{report}");
    let report = run(&mut forwarding(true), features).await;
    assert!(
        report.failed.iter().any(|(t, _)| *t == "wildcards"),
        "{report}"
    );
}
