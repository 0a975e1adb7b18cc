//! Configuration: modules enabled, disabled and configured from a TOML file.
//!
//! The format is documented on [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::supervisor::{Restart, Supervision};

/// Keys of a module's section that belong to the runtime.
pub const RESERVED_KEYS: &[&str] = &[
    "enabled",
    "restart",
    "max_restarts",
    "restart_window_secs",
    "shutdown_timeout_secs",
];

/// A configuration problem. Each names the module and the key or file involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The text is not valid TOML, or not of the expected shape.
    #[error("invalid configuration{}: {message}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if it came from one.
        path: Option<PathBuf>,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A key the module's config type does not know.
    #[error("unknown key `{key}` in [modules.{module}]: {message}")]
    UnknownKey {
        /// The module.
        module: String,
        /// The key.
        key: String,
        /// The deserializer's message (it lists the expected keys).
        message: String,
    },
    /// A value of the wrong type, a missing key, or any other error from the
    /// module's config type.
    #[error("invalid [modules.{module}]: {message}")]
    Invalid {
        /// The module.
        module: String,
        /// What is wrong.
        message: String,
    },
    /// A section for a module that is not registered with the runtime.
    #[error("[modules.{module}] configures a module that was never added to the runtime (added: {known})")]
    UnknownModule {
        /// The section's module name.
        module: String,
        /// The modules that were added, comma-separated.
        known: String,
    },
}

/// The runtime's keys of one module's section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModuleSettings {
    /// Whether the module is started (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Restart policy override.
    #[serde(default)]
    pub restart: Option<Restart>,
    /// Restart limit override.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Restart window override, in seconds.
    #[serde(default)]
    pub restart_window_secs: Option<f64>,
    /// Shutdown deadline override, in seconds.
    #[serde(default)]
    pub shutdown_timeout_secs: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            enabled: true,
            restart: None,
            max_restarts: None,
            restart_window_secs: None,
            shutdown_timeout_secs: None,
        }
    }
}

impl ModuleSettings {
    /// Applies the overrides to `s`.
    pub(crate) fn apply(&self, s: &mut Supervision) {
        if let Some(r) = self.restart {
            s.restart = r;
        }
        if let Some(n) = self.max_restarts {
            s.max_restarts = n;
        }
        // Checked by `Config::settings`; an invalid value changes nothing.
        if let Some(Ok(w)) = self.restart_window_secs.map(Duration::try_from_secs_f64) {
            s.within = w;
        }
        if let Some(Ok(t)) = self.shutdown_timeout_secs.map(Duration::try_from_secs_f64) {
            s.shutdown_timeout = t;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    modules: BTreeMap<String, toml::Table>,
}

/// A parsed configuration file: modules enabled, disabled and configured
/// from TOML.
///
/// One section per module, `[modules.<name>]`. A few keys are the runtime's
/// (they are never passed to the module); every other key belongs to the
/// module and is deserialized into its config type.
///
/// | key | type | meaning |
/// | --- | --- | --- |
/// | `enabled` | bool | `false`: the module is registered but never started (state `disabled`) |
/// | `restart` | `"never"`, `"on-failure"`, `"always"` | overrides the module's [`Restart`] policy |
/// | `max_restarts` | integer | overrides the restart intensity limit ... |
/// | `restart_window_secs` | number | ... and its window |
/// | `shutdown_timeout_secs` | number | overrides the shutdown deadline |
///
/// ```
/// use busline::Config;
/// #[derive(serde::Deserialize, Clone, Debug, PartialEq)]
/// #[serde(deny_unknown_fields)]
/// struct LoggerConfig { prefix: String, #[serde(default)] verbose: bool }
///
/// let config = Config::from_toml(r#"
///     [modules.logger]
///     prefix = "log"
///     restart = "always"
///
///     [modules.ui]
///     enabled = false
/// "#).unwrap();
/// assert!(config.settings("logger").unwrap().enabled);
/// assert!(!config.settings("ui").unwrap().enabled);
/// let logger: LoggerConfig = config.module("logger").unwrap();
/// assert_eq!(logger, LoggerConfig { prefix: "log".into(), verbose: false });
/// ```
///
/// ## Errors name the module and the key
///
/// Module config types should use `#[serde(deny_unknown_fields)]`: a typo
/// then fails loudly instead of being ignored. A section for a module that was
/// never added to the runtime is an error too ([`ConfigError::UnknownModule`],
/// reported by [`Runtime::run`](crate::Runtime::run)), and so is a key in the
/// section of a module that takes no configuration.
///
/// ```
/// # use busline::{Config, ConfigError};
/// # #[derive(serde::Deserialize, Debug)]
/// # #[serde(deny_unknown_fields)]
/// # struct LoggerConfig { prefix: String }
/// let config = Config::from_toml("[modules.logger]\nprefix = \"x\"\nverbos = true\n").unwrap();
/// let err = config.module::<LoggerConfig>("logger").unwrap_err();
/// assert!(matches!(&err, ConfigError::UnknownKey { module, key, .. }
///                  if module == "logger" && key == "verbos"));
/// assert!(err.to_string().starts_with("unknown key `verbos` in [modules.logger]"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    modules: BTreeMap<String, toml::Table>,
}

impl Config {
    /// An empty configuration: every module enabled, with its defaults.
    pub fn new() -> Self {
        Config::default()
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, None)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, Some(path.to_path_buf()))
    }

    fn parse(text: &str, path: Option<PathBuf>) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string().trim_end().to_string(),
        })?;
        Ok(Config {
            modules: file.modules,
        })
    }

    /// The modules that have a section.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(|k| k.as_str())
    }

    /// The runtime's keys of `module`'s section (defaults if it has none).
    pub fn settings(&self, module: &str) -> Result<ModuleSettings, ConfigError> {
        let Some(table) = self.modules.get(module) else {
            return Ok(ModuleSettings::default());
        };
        let reserved: toml::Table = table
            .iter()
            .filter(|(k, _)| RESERVED_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let s: ModuleSettings = deserialize(module, reserved)?;
        for (key, v) in [
            ("restart_window_secs", s.restart_window_secs),
            ("shutdown_timeout_secs", s.shutdown_timeout_secs),
        ] {
            if let Some(v) = v {
                if Duration::try_from_secs_f64(v).is_err() {
                    return Err(ConfigError::Invalid {
                        module: module.to_string(),
                        message: format!(
                            "`{key}` must be a finite number of seconds, 0 or more (got {v})"
                        ),
                    });
                }
            }
        }
        Ok(s)
    }

    /// Deserializes `module`'s own keys (all but the [reserved](RESERVED_KEYS)
    /// ones) into `C`. A module without a section gets an empty table (so `C`
    /// must default every field for the section to be optional).
    pub fn module<C: DeserializeOwned>(&self, module: &str) -> Result<C, ConfigError> {
        deserialize(module, self.own_keys(module))
    }

    /// Fails if `module`'s section has keys of its own (for modules that take
    /// no configuration).
    pub(crate) fn check_no_keys(&self, module: &str) -> Result<(), ConfigError> {
        match self.own_keys(module).keys().next() {
            None => Ok(()),
            Some(key) => Err(ConfigError::UnknownKey {
                module: module.to_string(),
                key: key.clone(),
                message: format!(
                    "this module takes no configuration; the keys it accepts are {}",
                    RESERVED_KEYS.join(", ")
                ),
            }),
        }
    }

    fn own_keys(&self, module: &str) -> toml::Table {
        self.modules
            .get(module)
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn deserialize<C: DeserializeOwned>(module: &str, table: toml::Table) -> Result<C, ConfigError> {
    toml::Value::Table(table).try_into::<C>().map_err(|e| {
        let message = e.message().trim_end().to_string();
        // The key the error is about (`retry.attempts`): toml only shows it
        // in its text, as a last line "in `key`".
        let text = e.to_string();
        let path = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .filter(|p| !p.is_empty());
        match unknown_field(&message) {
            Some(key) => ConfigError::UnknownKey {
                module: module.to_string(),
                key: match path {
                    Some(p) => format!("{p}.{key}"),
                    None => key,
                },
                message,
            },
            None => ConfigError::Invalid {
                module: module.to_string(),
                message: match path {
                    Some(p) => format!("`{p}`: {message}"),
                    None => message,
                },
            },
        }
    })
}

/// The key named by serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Alerter {
        threshold: u32,
        #[serde(default)]
        channel: Option<String>,
    }

    #[test]
    fn wrong_types_and_missing_keys_name_the_module() {
        let c = Config::from_toml("[modules.alerter]\nthreshold = \"high\"\n").unwrap();
        let e = c.module::<Alerter>("alerter").unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { module, .. } if module == "alerter"));
        assert!(
            e.to_string().starts_with("invalid [modules.alerter]: "),
            "{e}"
        );

        let c = Config::from_toml("[modules.alerter]\nchannel = \"ops\"\n").unwrap();
        let e = c.module::<Alerter>("alerter").unwrap_err();
        assert!(e.to_string().contains("missing field `threshold`"), "{e}");
    }

    #[test]
    fn reserved_keys_are_checked_and_not_passed_on() {
        let c = Config::from_toml(
            "[modules.alerter]\nthreshold = 3\nenabled = false\nrestart = \"always\"\nmax_restarts = 2\n",
        )
        .unwrap();
        let a: Alerter = c.module("alerter").unwrap();
        assert_eq!(a.threshold, 3);
        let s = c.settings("alerter").unwrap();
        assert!(!s.enabled);
        assert_eq!(s.restart, Some(Restart::Always));
        let mut sup = Supervision::default();
        s.apply(&mut sup);
        assert_eq!(sup.max_restarts, 2);

        let c = Config::from_toml("[modules.a]\nenabled = \"no\"\n").unwrap();
        let e = c.settings("a").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { module, .. } if module == "a"),
            "{e}"
        );
        let c = Config::from_toml("[modules.a]\nrestart = \"sometimes\"\n").unwrap();
        assert!(c
            .settings("a")
            .unwrap_err()
            .to_string()
            .contains("sometimes"));
    }

    #[test]
    fn bad_files() {
        let e = Config::from_toml("[modules.a\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { path: None, .. }), "{e}");
        let e = Config::from_toml("[modulez.a]\nx = 1\n").unwrap_err();
        assert!(e.to_string().contains("modulez"), "{e}");
        let e = Config::load("/nonexistent/busline.toml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/busline.toml"), "{e}");
        let c = Config::from_toml("[modules.a]\nx = 1\n").unwrap();
        let e = c.check_no_keys("a").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, .. } if key == "x"),
            "{e}"
        );
        c.check_no_keys("b").unwrap();
    }
}
