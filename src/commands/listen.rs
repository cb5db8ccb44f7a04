//! `zendesk-lake listen`: a long-running server that syncs the streams Zendesk's webhooks say
//! have news, within seconds, and every stream at least every `max_interval`
//! (docs/ARCHITECTURE.md, "Webhooks"). The server and its scheduler are [`crate::listen`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Secret, Settings};
use crate::listen::{ListenOptions, ListenReport, Listener};
use crate::sync::{self, Syncer};
use crate::webhooks::Verifier;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sync(#[from] sync::Error),
    #[error("listen: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A listener ready to serve: the credentials checked, the lake migrated, the port bound.
pub struct Listening {
    listener: Listener,
    syncer: Arc<Syncer>,
    verifier: Verifier,
}

impl Listening {
    pub async fn start(
        settings: Settings,
        secret: &Secret,
        options: ListenOptions,
    ) -> Result<Listening, Error> {
        let syncer = Arc::new(Syncer::try_new(settings).await?);
        let addr = options.bind;
        let listener = Listener::bind(options)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Listening {
            listener,
            syncer,
            verifier: Verifier::new(secret),
        })
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound socket always has a local address.
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> ListenReport {
        self.listener
            .serve(self.syncer, self.verifier, shutdown)
            .await
    }
}
