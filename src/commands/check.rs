//! `zendesk-lake check`: the credentials, then one page of every configured stream, so that a
//! pipeline's plan problems (an add-on missing, a Help Center switched off) show before a run.

use std::sync::Arc;

use crate::config::Settings;
use crate::lake::{ControlRow, Lake};
use crate::zendesk::readers::children::Parent;
use crate::zendesk::readers::{self, Context};
use crate::zendesk::{Client, RequestStats};

use crate::sync::{self, streams_of, Error};

/// Whether a stream can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    Yes,
    /// 403/404: not on this plan or not for these credentials; `sync` skips it with a warning.
    Skipped(String),
    /// Any other failure; `sync` would fail it.
    Failing(String),
}

/// One table of the check.
#[derive(Debug, Clone)]
pub struct TableCheck {
    pub table: String,
    pub stream: String,
    /// The stream's endpoint path.
    pub endpoint: String,
    pub readable: Readable,
    /// The stream's newest control row: where the next sync resumes (`None`: first sync).
    pub resume: Option<ControlRow>,
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub base_url: String,
    /// The authenticated user (`email`, `role`).
    pub email: String,
    pub role: String,
    pub tables: Vec<TableCheck>,
    /// `start_time` of a first sync.
    pub start_time: i64,
}

impl CheckReport {
    /// Whether every table is readable or skipped on this plan.
    pub fn ok(&self) -> bool {
        self.tables
            .iter()
            .all(|t| !matches!(t.readable, Readable::Failing(_)))
    }
}

/// Check the credentials, then read one small page of every configured stream from where the
/// next sync would resume. Wrong credentials are an error; a stream that fails is reported.
pub async fn check(settings: &Settings) -> Result<CheckReport, Error> {
    let client = Client::try_new(&settings.zendesk).map_err(Error::Client)?;
    let stats = Arc::new(RequestStats::default());
    let me = client.me(&stats).await?;
    let text = |key: &str| me[key].as_str().unwrap_or("?").to_owned();
    let lake = Lake::try_new(&settings.lake, settings.storage.clone())?;
    // A lake that cannot be read yet (no lake, no access) only means a first sync.
    let state = lake.latest_state().await.unwrap_or_default();
    let mut tables = Vec::new();
    for (stream, members) in streams_of(&settings.tables) {
        let resume = state.get(&stream.name).cloned();
        // A children stream is probed with one live parent of the lake, if it has any.
        let parents = match &stream.parents {
            Some(spec) => lake
                .rows_after(&spec.table, &spec.cursor, (i64::MIN, i64::MIN))
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|&(_, _, gone)| !gone)
                .take(1)
                .map(|(id, cursor, gone)| Parent { id, cursor, gone })
                .collect(),
            None => Vec::new(),
        };
        let context = Context {
            client: client.clone(),
            stream,
            page_size: 1,
            sizing: Default::default(),
            stats: stats.clone(),
            includes: sync::includes(&members),
            parents,
        };
        let position = resume.as_ref().map(|r| &r.position);
        let probe = match readers::open(context, position, settings.start_time) {
            Ok(mut reader) => reader.next_page().await.map(drop),
            Err(e) => Err(e),
        };
        let readable = match probe {
            Ok(()) => Readable::Yes,
            Err(e) if e.status() == Some(400) => Readable::Yes,
            Err(e) if matches!(e.status(), Some(403 | 404)) => Readable::Skipped(e.to_string()),
            Err(e) => Readable::Failing(e.to_string()),
        };
        for table in members {
            tables.push(TableCheck {
                table: table.name.clone(),
                stream: stream.name.clone(),
                endpoint: stream.path.clone(),
                readable: readable.clone(),
                resume: resume.clone(),
            });
        }
    }
    Ok(CheckReport {
        base_url: client.base_url().to_string(),
        email: text("email"),
        role: text("role"),
        tables,
        start_time: settings.start_time,
    })
}
