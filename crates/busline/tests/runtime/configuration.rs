//! A module gets its config section; config and naming mistakes are refused
//! before anything starts, naming the module and the key.

use std::time::Duration;

use busline::{
    BoxError, Bus, Config, ConfigError, Context, Module, ModuleState, Restart, Runtime,
    RuntimeError, StopReason,
};

use crate::{failing, idle, runtime, Quick};

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GreeterConfig {
    greeting: String,
}

struct Greeter {
    cfg: GreeterConfig,
}

impl Module<String> for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }
    async fn run(&mut self, ctx: Context<String>) -> Result<(), BoxError> {
        ctx.publish_to("greetings", self.cfg.greeting.clone())
            .await?;
        Ok(())
    }
}

fn greeter_runtime(toml: &str) -> Runtime<String> {
    let config = Config::from_toml(toml).unwrap();
    let mut rt = Runtime::new(Bus::new())
        .handle_signals(false)
        .with_config(config);
    rt.add_configured("greeter", |cfg: GreeterConfig| Greeter { cfg });
    rt
}

#[tokio::test(start_paused = true)]
async fn configured_modules_get_their_section() {
    let rt = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\n");
    let mut greetings = rt.bus().subscribe("greetings").unwrap();
    let report = rt.run().await.unwrap();
    assert_eq!(report.reason, StopReason::Finished);
    assert_eq!(greetings.recv().await.unwrap().payload, "hi");

    let rt = greeter_runtime("[modules.greeter]\nenabled = false\n");
    let report = rt.run().await.unwrap();
    assert_eq!(
        report.module("greeter").unwrap().state,
        ModuleState::Disabled
    );
}

#[tokio::test(start_paused = true)]
async fn config_errors_name_the_module_and_the_key() {
    let err = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\ngreting = \"typo\"\n")
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::UnknownKey { module, key, .. })
            if module == "greeter" && key == "greting"),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("unknown key `greting` in [modules.greeter]"));

    let err = greeter_runtime("[modules.greeter]\n")
        .run()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing field `greeting`"),
        "{err}"
    );

    let err = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\n[modules.gretter]\n")
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[modules.gretter] configures a module that was never added to the runtime (added: greeter)"
    );

    // A module without a config type takes no keys but the runtime's.
    let config = Config::from_toml("[modules.quick]\nverbose = true\n").unwrap();
    let mut rt = runtime(Bus::new()).with_config(config);
    rt.add(Quick);
    let err = rt.run().await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::UnknownKey { module, key, .. })
            if module == "quick" && key == "verbose"),
        "{err}"
    );

    // The runtime's keys override the code's supervision.
    let config = Config::from_toml("[modules.once]\nrestart = \"never\"\n").unwrap();
    let mut rt = runtime(Bus::new()).with_config(config);
    rt.add(failing("once", Duration::ZERO, false))
        .restart(Restart::Always);
    let err = rt.run().await.unwrap_err();
    assert!(matches!(err, RuntimeError::ModuleFailed { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn bad_and_duplicate_names_are_refused_before_anything_starts() {
    let mut rt = runtime(Bus::new());
    rt.add(idle("has.dot"));
    let err = rt.run().await.unwrap_err();
    assert!(
        err.to_string().starts_with("invalid module name `has.dot`"),
        "{err}"
    );

    let m = failing("twice", Duration::ZERO, false);
    let starts = m.starts.clone();
    let mut rt = runtime(Bus::new());
    rt.add(m.clone());
    rt.add(m);
    let err = rt.run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "two modules are named `twice`; module names must be unique"
    );
    assert!(starts.lock().is_empty(), "nothing was started");
}

#[tokio::test(start_paused = true)]
async fn a_configured_module_must_carry_its_sections_name() {
    let mut rt = Runtime::<String>::new(Bus::new()).handle_signals(false);
    rt.add_configured("welcome", |cfg: GreeterConfig| Greeter { cfg });
    let config = Config::from_toml("[modules.welcome]\ngreeting = \"hi\"\n").unwrap();
    let err = rt.with_config(config).run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid module name `greeter`: the module added for [modules.welcome] must be named `welcome`"
    );
}

/// Durations in the config that are negative, not finite or too large are a
/// config error naming the module and the key, not a panic in `run`.
#[tokio::test(start_paused = true)]
async fn a_bad_duration_in_the_config_is_a_config_error() {
    for (key, value) in [
        ("restart_window_secs", "-1.0"),
        ("shutdown_timeout_secs", "nan"),
        ("shutdown_timeout_secs", "inf"),
        ("restart_window_secs", "1e300"),
    ] {
        let config = Config::from_toml(&format!("[modules.quick]\n{key} = {value}\n")).unwrap();
        let mut rt = Runtime::new(Bus::<u32>::new())
            .handle_signals(false)
            .with_config(config);
        rt.add(Quick);
        let res = tokio::spawn(rt.run()).await.expect("run did not panic");
        match res {
            Err(RuntimeError::Config(ConfigError::Invalid { module, message })) => {
                assert_eq!(module, "quick");
                assert!(message.contains(key), "{message}");
            }
            other => panic!("{key} = {value}: {other:?}"),
        }
    }
}
