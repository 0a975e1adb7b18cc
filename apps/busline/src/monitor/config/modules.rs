//! `--modules`: which modules a process runs.

use anyhow::{bail, Result};

/// Which modules a process runs (`--modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modules {
    /// The simulated web service.
    pub web_sim: bool,
    /// The simulated database.
    pub db_sim: bool,
    /// The terminal dashboard.
    pub dashboard: bool,
    /// The logger.
    pub logger: bool,
    /// The alerter.
    pub alerter: bool,
    /// The web dashboard and API.
    pub web: bool,
    /// The ingest listeners (StatsD).
    pub ingest: bool,
}

impl Modules {
    /// Every module.
    pub const ALL: Modules = Modules {
        web_sim: true,
        db_sim: true,
        dashboard: true,
        logger: true,
        alerter: true,
        web: true,
        ingest: true,
    };

    /// Parses `--modules`: names separated by commas.
    pub fn parse(text: &str) -> Result<Modules> {
        let mut m = Modules {
            web_sim: false,
            db_sim: false,
            dashboard: false,
            logger: false,
            alerter: false,
            web: false,
            ingest: false,
        };
        for name in text.split(',').map(str::trim) {
            match name {
                "all" => m = Modules::ALL,
                "publishers" => (m.web_sim, m.db_sim) = (true, true),
                "web-sim" => m.web_sim = true,
                "db-sim" => m.db_sim = true,
                "dashboard" => m.dashboard = true,
                "logger" => m.logger = true,
                "alerter" => m.alerter = true,
                "web" => m.web = true,
                "ingest" => m.ingest = true,
                "" => bail!("modules {text:?}: an empty name"),
                other => bail!(
                    "modules: unknown module {other:?}; expected publishers, web-sim, db-sim, \
                     dashboard, logger, alerter, web, ingest or all"
                ),
            }
        }
        Ok(m)
    }

    /// Whether it runs a module that publishes metrics (the simulators, the
    /// web API, the ingest listeners).
    pub fn publishes(&self) -> bool {
        self.web_sim || self.db_sim || self.web || self.ingest
    }

    /// Whether it runs a module that reads metrics (dashboard, logger, alerter).
    pub fn consumes(&self) -> bool {
        self.dashboard || self.logger || self.alerter
    }

    /// The names of the modules it runs, sorted, joined by `-` (part of the
    /// name of the process's JetStream consumer).
    pub fn consumer_key(&self) -> String {
        let mut names = Vec::new();
        for (on, name) in [
            (self.alerter, "alerter"),
            (self.dashboard, "dashboard"),
            (self.db_sim, "db-sim"),
            (self.ingest, "ingest"),
            (self.logger, "logger"),
            (self.web, "web"),
            (self.web_sim, "web-sim"),
        ] {
            if on {
                names.push(name);
            }
        }
        names.join("-")
    }
}
