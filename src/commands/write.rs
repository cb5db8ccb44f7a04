//! What the commands that write to Zendesk (`import`, `push`) share: their error
//! (docs/ARCHITECTURE.md, "The write path"). Each returns it as its own `Error`.

use crate::{encode, lake, sync, zendesk};

/// Why a write command stopped. Its rows' state is as recorded: the next run goes on from it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    /// A row of the source that makes no request: refused before any request.
    #[error("the source cannot be sent: {0}")]
    Encode(#[from] encode::Error),
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    /// `push` syncs the tickets before and after its writes.
    #[error("syncing the tickets: {0}")]
    Sync(#[from] sync::Error),
    #[error("syncing the tickets failed: {0}")]
    SyncFailed(String),
    #[error("{tickets} tickets would change, more than --max-tickets {max}: nothing sent")]
    TooMany { tickets: usize, max: usize },
}

impl Error {
    /// Whether another run holds the lease of the command's state table, so that this one sent
    /// nothing more (a transient outcome: the next run goes on).
    pub fn is_leased(&self) -> bool {
        matches!(
            self,
            Error::Lake(lake::Error::Leased { .. } | lake::Error::LeaseLost { .. })
        )
    }
}
