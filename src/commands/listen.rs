//! `zendesk-lake listen`: a long-running server that syncs the streams Zendesk's webhooks say
//! have news, within seconds, and every stream at least every `max_interval`
//! (docs/ARCHITECTURE.md, "Webhooks"). The server and its scheduler are [`crate::listen`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::sync as sync_command;
use crate::commands::webhook::{self, RegisterOptions};
use crate::config::{Secret, Settings};
use crate::listen::{ListenOptions, ListenReport, Listener};
use crate::sim::Round;
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
}

impl Listening {
    pub async fn start(settings: Settings, options: ListenOptions) -> Result<Listening, Error> {
        let syncer = Arc::new(Syncer::try_new(settings).await?);
        let addr = options.bind;
        let listener = Listener::bind(options)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Listening { listener, syncer })
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound socket always has a local address.
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve deliveries signed with `secret` until `shutdown` completes.
    pub async fn serve(self, secret: &Secret, shutdown: impl Future<Output = ()>) -> ListenReport {
        let verifier = Verifier::new(secret);
        self.listener.serve(self.syncer, verifier, shutdown).await
    }
}

/// `listen --demo`: the simulated account of `sync --demo`, changing by a round every few
/// seconds and delivering signed webhooks to the listener, registered as `webhook register`
/// would.
pub struct Demo {
    pub account: sync_command::Demo,
}

impl Demo {
    pub async fn start() -> std::io::Result<Demo> {
        Ok(Demo {
            account: sync_command::Demo::start().await?,
        })
    }

    /// Register the listener at `url` as the account's webhook; the signing secret it was given.
    pub async fn connect(&self, settings: &Settings, url: &str) -> Result<Secret, webhook::Error> {
        let file =
            std::env::temp_dir().join(format!("zendesk-lake-demo-secret-{}", uuid::Uuid::new_v4()));
        let registered = webhook::register(settings, &RegisterOptions::new(url, &file)).await;
        let secret = std::fs::read_to_string(&file);
        _ = std::fs::remove_file(&file);
        registered?;
        secret
            .map(|s| Secret::new(s.trim()))
            .map_err(|source| webhook::Error::SecretFile { path: file, source })
    }

    /// Apply a round of changes every `every` until `stop` fires.
    pub fn keep_changing(&self, every: Duration, stop: CancellationToken) -> JoinHandle<()> {
        let simulator = self.account.simulator.clone();
        let round = Round {
            creates: 3,
            updates: 6,
            silent_updates: 2,
            deletes: 1,
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => simulator.apply_round(&round),
                }
            }
        })
    }
}
