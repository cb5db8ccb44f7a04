//! Lakes on S3, against moto's S3 server on loopback (`pip install "moto[server]"`): the
//! scenarios of stores.rs (full and incremental syncs, crashes, concurrent runs).
//!
//! Each test starts its own `moto_server` (or uses `ZENDESK_LAKE_TEST_S3_ENDPOINT`). Without
//! moto on PATH the tests say so and pass, unless `ZENDESK_LAKE_REQUIRE_S3` is set, as CI does.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::common::*;
use crate::proxy::Proxy;
use crate::stores;

/// A local S3 server for one test, stopped on drop.
struct S3 {
    endpoint: String,
    _server: Option<Emulator>,
}

impl S3 {
    async fn start() -> Option<S3> {
        if let Ok(endpoint) = std::env::var("ZENDESK_LAKE_TEST_S3_ENDPOINT") {
            return Some(S3 {
                endpoint,
                _server: None,
            });
        }
        let server = Emulator::start(
            "moto_server",
            &["-H", "127.0.0.1", "-p", "{port}"],
            "ZENDESK_LAKE_REQUIRE_S3",
            "pip install \"moto[server]\"",
        )
        .await?;
        Some(S3 {
            endpoint: server.endpoint.clone(),
            _server: Some(server),
        })
    }

    fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint.clone()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ])
    }

    /// A new bucket and a lake URI in it, registered with the test helpers.
    async fn lake(&self, name: &str) -> PathBuf {
        let bucket = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let status = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
        let uri = format!("s3://{bucket}/lake");
        STORAGE.lock().unwrap().push((uri.clone(), self.options()));
        PathBuf::from(uri)
    }

    fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().collect()
    }

    /// [`S3::env`] reaching the server through `proxy`.
    fn env_via(&self, proxy: &Proxy) -> Vec<(String, String)> {
        let mut env = self.env();
        for (name, value) in &mut env {
            if name == "AWS_ENDPOINT_URL" {
                *value = proxy.endpoint.clone();
            }
        }
        env
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_syncs_on_s3() {
    let Some(s3) = S3::start().await else { return };
    stores::full_and_incremental_syncs(&s3.lake("sync").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_data_and_control_commit_on_s3_converges() {
    let Some(s3) = S3::start().await else { return };
    for point in [
        "after_data_commit:2",
        "before_data_commit:3",
        "page_decoded:4",
    ] {
        stores::a_crash_converges(&s3.lake("crash").await, &s3.env(), point).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_lake_on_s3_never_corrupt_or_duplicate() {
    let Some(s3) = S3::start().await else { return };
    stores::concurrent_runs(&s3.lake("concurrent").await, &s3.env()).await;
}

/// Commits S3 applied whose answers are lost on the way back: answered 503 instead (the client
/// retries, and S3 answers the conditional put 412), or with the connection closed (the client
/// cannot know), on data, creating and control commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_applied_commits_on_s3_go_on_as_committed() {
    let Some(s3) = S3::start().await else { return };
    let proxy = Proxy::start(&s3.endpoint, stores::lost_answers()).await;
    let lake = s3.lake("lost").await;
    stores::lost_answers_of_applied_commits_converge(&lake, &s3.env_via(&proxy), &proxy).await;
}
