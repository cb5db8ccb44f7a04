//! Lakes on Azure Blob Storage (`az://`), against Azurite on loopback (`npm install -g azurite`):
//! the scenarios of stores.rs (full and incremental syncs, a crash, concurrent runs).
//!
//! Each test starts its own `azurite-blob`. Without it on PATH the tests say so and pass, unless
//! `ZENDESK_LAKE_REQUIRE_AZURE` is set, as CI does.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;

use crate::common::*;
use crate::proxy::Proxy;
use crate::stores;

/// Azurite's well-known development account.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    server: Emulator,
}

impl Azurite {
    async fn start() -> Option<Azurite> {
        let server = Emulator::start(
            "azurite-blob",
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "{port}",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            "ZENDESK_LAKE_REQUIRE_AZURE",
            "npm install -g azurite",
        )
        .await?;
        Some(Azurite { server })
    }

    /// The storage options of a lake here, under the names the environment would use.
    fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("AZURE_STORAGE_ACCOUNT_NAME".to_owned(), ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY".to_owned(), KEY.to_owned()),
            (
                "AZURE_STORAGE_ENDPOINT".to_owned(),
                format!("{}/{ACCOUNT}", self.server.endpoint),
            ),
            ("AZURE_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ])
    }

    fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().collect()
    }

    /// [`Azurite::env`] reaching the server through `proxy`.
    fn env_via(&self, proxy: &Proxy) -> Vec<(String, String)> {
        let mut env = self.env();
        for (name, value) in &mut env {
            if name == "AZURE_STORAGE_ENDPOINT" {
                *value = format!("{}/{ACCOUNT}", proxy.endpoint);
            }
        }
        env
    }

    /// A new container and a lake URI in it, registered with the test helpers.
    async fn lake(&self, name: &str) -> PathBuf {
        let container = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        self.create_container(&container).await;
        let uri = format!("az://{container}/lake");
        STORAGE.lock().unwrap().push((uri.clone(), self.options()));
        PathBuf::from(uri)
    }

    /// `Create Container`, signed with the account key (Shared Key authorization).
    async fn create_container(&self, container: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        // VERB, eleven standard headers (all empty here), the x-ms- headers, the resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let response = reqwest::Client::new()
            .put(format!(
                "{}/{ACCOUNT}/{container}?restype=container",
                self.server.endpoint
            ))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header("authorization", format!("SharedKey {ACCOUNT}:{signature}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "creating container {container}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_syncs_on_azure() {
    let Some(azure) = Azurite::start().await else {
        return;
    };
    stores::full_and_incremental_syncs(&azure.lake("sync").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_data_and_control_commit_on_azure_converges() {
    let Some(azure) = Azurite::start().await else {
        return;
    };
    let lake = azure.lake("crash").await;
    stores::a_crash_converges(&lake, &azure.env(), "after_data_commit:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_lake_on_azure_never_corrupt_or_duplicate() {
    let Some(azure) = Azurite::start().await else {
        return;
    };
    stores::concurrent_runs(&azure.lake("concurrent").await, &azure.env()).await;
}

/// Commits Azure applied whose answers are lost on the way back: answered 503 instead (the
/// client retries, and Azure answers the conditional put 409), or with the connection closed,
/// on data, creating and control commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_applied_commits_on_azure_go_on_as_committed() {
    let Some(azurite) = Azurite::start().await else {
        return;
    };
    let proxy = Proxy::start(&azurite.server.endpoint, stores::lost_answers()).await;
    let lake = azurite.lake("lost").await;
    stores::lost_answers_of_applied_commits_converge(&lake, &azurite.env_via(&proxy), &proxy).await;
}
