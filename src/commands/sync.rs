//! `zendesk-lake sync`: one run of every configured table, and `sync --demo`, the same run
//! against the built-in simulated account.

use std::collections::BTreeMap;
use std::io;

use crate::config::{self, PipelineFile, Settings};
use crate::sim::{Round, SimConfig, SimServer, Simulator};
use crate::sync::progress::Tracker;
use crate::sync::{Error, SyncReport, Syncer};

/// The demo's pipeline: every table of the default set, into `./lake`.
const DEMO_PIPELINE: &str = include_str!("../../pipelines/demo.toml");

/// Sync every configured table once, reporting each stream's progress to `tracker`.
pub async fn sync(settings: Settings, tracker: Tracker) -> Result<SyncReport, Error> {
    let syncer = Syncer::try_new(settings).await?;
    let tables = syncer.settings().tables.clone();
    syncer.run(&tables).with_tracker(tracker).await
}

/// The simulated account of `sync --demo`, served on loopback, with one round of changes
/// applied so that the demo's lake has updates and soft deletes too.
pub struct Demo {
    pub config: SimConfig,
    pub simulator: Simulator,
    pub server: SimServer,
}

impl Demo {
    pub async fn start() -> io::Result<Demo> {
        let config = SimConfig::demo();
        let simulator = Simulator::new(config.clone());
        simulator.apply_round(&Round::demo());
        let server = simulator.serve(0).await?;
        Ok(Demo {
            config,
            simulator,
            server,
        })
    }

    /// The environment a pipeline sees to sync this account.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.config.env(self.server.base_url())
    }

    /// The demo's pipeline file (pipelines/demo.toml).
    pub fn pipeline() -> config::Result<PipelineFile> {
        PipelineFile::parse(DEMO_PIPELINE, "pipelines/demo.toml")
    }
}
