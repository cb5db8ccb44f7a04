//! The binary as a user runs it: exit codes, messages, the demo, status and query.

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_zendesk-lake");

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_clearly_and_write_nothing() {
    let (_sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let token = "wrong-token-7f3a9c";
    let out = run(
        &["sync", "--lake", lake.to_str().unwrap()],
        &[
            ("ZENDESK_BASE_URL", server.base_url()),
            ("ZENDESK_EMAIL", "demo@example.com"),
            ("ZENDESK_API_TOKEN", token),
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(token) && !text(&out.stdout).contains(token),
        "token leaked: {stderr}"
    );
    assert!(!lake.exists(), "nothing may be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["sync", "--lake", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ZENDESK_SUBDOMAIN"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &["sync", "--objects", "tickets,nope"],
        &[("ZENDESK_SUBDOMAIN", "acme"), ("ZENDESK_OAUTH_TOKEN", "x")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"nope\""),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_and_query_through_the_binary() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let config = zendesk_lake::sim::SimConfig::default();
    let env = [
        ("ZENDESK_BASE_URL", server.base_url()),
        ("ZENDESK_OAUTH_TOKEN", config.oauth_token.as_str()),
    ];
    // The same lake as a file:// URI and as a plain path.
    let uri = format!("file://{lake}");
    let out = run(&["sync", "--lake", &uri], &env).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for object in OBJECTS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(object))
            .unwrap_or_else(|| panic!("{stdout}"));
        let fetched: usize = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(fetched, expected_rows(&sim, object).len(), "{line}");
    }
    assert!(!stdout.contains(&config.oauth_token));

    let out = run(&["status", "--lake", lake], &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // stream, table, seq, rows, ...
    let tickets = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("tickets"))
        .unwrap();
    let rows: usize = tickets.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(rows, expected_rows(&sim, "tickets").len(), "{stdout}");

    let out = run(
        &["query", "--lake", lake, "SELECT count(*) AS n FROM users"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("| {} ", expected_rows(&sim, "users").len())),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        &["query", "--lake", lake, "SELECT * FROM no_such_table"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no_such_table"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_syncs_an_account_of_today_and_a_rerun_reads_only_what_moved() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let out = run(&["sync", "--demo", "--lake", lake], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = text(&out.stdout);
    // The demo account's history ends now: every stream is minutes behind, not years.
    let out = run(&["status", "--lake", lake], &[]).await;
    let status = text(&out.stdout);
    for object in OBJECTS {
        let line = status
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(object))
            .unwrap_or_else(|| panic!("{status}"));
        let lag = line.split_whitespace().nth(6).unwrap();
        assert!(lag.ends_with('s') || lag.ends_with('m'), "{line}");
    }
    // A second demo serves the same account a little later: the run goes on from the lake's
    // position and reads only what moved since.
    let out = run(&["sync", "--demo", "--lake", lake], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = text(&out.stdout);
    for object in OBJECTS {
        let fetched = |s: &str| -> u64 {
            let line = s.lines().find(|l| l.starts_with(object)).unwrap();
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert!(fetched(&first) > 0, "{first}");
        assert!(fetched(&second) < fetched(&first) / 4, "{first}\n{second}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_credentials_and_readable_tables() {
    let (_sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = zendesk_lake::sim::SimConfig::default();
    let lake = dir.path().join("lake");
    let out = run(
        &["check", "--lake", lake.to_str().unwrap()],
        &[
            ("ZENDESK_BASE_URL", server.base_url()),
            ("ZENDESK_EMAIL", config.email.as_str()),
            ("ZENDESK_API_TOKEN", config.api_token.as_str()),
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("credentials ok"), "{stdout}");
    for object in OBJECTS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(object))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(" readable"), "{line}");
    }
    assert!(!lake.exists(), "check writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_table_makes_sync_exit_1_naming_table_and_endpoint() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = zendesk_lake::sim::SimConfig::default();
    let pipeline = dir.path().join("fast.toml");
    std::fs::write(
        &pipeline,
        "[zendesk]\nretry_base_ms = 1\nmax_attempts = 2\nincremental_requests_per_minute = 100000\n",
    )
    .unwrap();
    // The credential check passes, every export request after it fails.
    sim.set_faults(zendesk_lake::sim::Faults {
        fail_from_request: Some(2),
        ..Default::default()
    });
    let out = run(
        &[
            "sync",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--lake",
            lake.to_str().unwrap(),
            "--objects",
            "users",
        ],
        &[
            ("ZENDESK_BASE_URL", server.base_url()),
            ("ZENDESK_EMAIL", config.email.as_str()),
            ("ZENDESK_API_TOKEN", config.api_token.as_str()),
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(text(&out.stdout).contains("FAILED"));
    assert!(
        stderr.contains("error: users: GET /api/v2/incremental/users/cursor.json"),
        "{stderr}"
    );
    assert!(stderr.contains("gave up after 2 attempts"), "{stderr}");
    assert!(!stderr.contains(&config.api_token), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serves_an_account_that_sync_reads() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "--port",
            "0",
            "--tickets",
            "40",
            "--users",
            "10",
            "--organizations",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(assignment) = line.strip_prefix("export ") {
            let (k, v) = assignment.split_once('=').unwrap();
            env.push((k.to_owned(), v.to_owned()));
            if env.len() == 3 {
                break;
            }
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["sync", "--lake", dir.path().to_str().unwrap()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let tickets = stdout.lines().find(|l| l.starts_with("tickets")).unwrap();
    assert_eq!(tickets.split_whitespace().nth(2), Some("40"), "{stdout}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_trace_logs_or_output() {
    use base64::Engine as _;
    let (sim, server) = start(small()).await;
    // Some retries too, so that error and retry paths log as well.
    sim.set_faults(zendesk_lake::sim::Faults {
        rate_limit_every: Some(4),
        retry_after: Some("0.01".into()),
        server_error_every: Some(7),
        ..Default::default()
    });
    let config = zendesk_lake::sim::SimConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[zendesk]\nretry_base_ms = 1\nmax_attempts = 20\nincremental_requests_per_minute = 100000\n",
    )
    .unwrap();
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}/token:{}", config.email, config.api_token));
    for log_format in ["text", "json"] {
        let out = run(
            &[
                "--log-format",
                log_format,
                "sync",
                "--pipeline",
                pipeline.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
            ],
            &[
                ("ZENDESK_BASE_URL", server.base_url()),
                ("ZENDESK_EMAIL", config.email.as_str()),
                ("ZENDESK_API_TOKEN", config.api_token.as_str()),
                ("RUST_LOG", "trace"),
            ],
        )
        .await;
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(all.len() > 10_000, "trace logging produced output");
        assert!(all.contains("retrying"), "the retry path was logged");
        assert!(
            !all.contains(&config.api_token),
            "token in the {log_format} logs"
        );
        assert!(
            !all.contains(&basic),
            "Basic credentials in the {log_format} logs"
        );
    }
}

/// A TLS server on loopback with a certificate signed by a test authority (tests/data/tls), answering every
/// request it decrypts like `users/me`. Returns its port and the number of requests it read.
async fn untrusted_tls_server() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{crypto::ring, ServerConfig};

    let certs = vec![CertificateDer::from_pem_slice(TLS_CERT).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../data/tls/key.pem")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buf = vec![0; 16 * 1024];
                if tls.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"user":{"id":1,"role":"admin","email":"demo@example.com"}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, requests)
}

const TLS_CERT: &[u8] = include_bytes!("../data/tls/cert.pem");
const TLS_CA: &[u8] = include_bytes!("../data/tls/ca.pem");

/// Certificate validation is always on: a host whose certificate no trusted authority signed
/// never receives a request, so the credentials are never sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_an_untrusted_certificate_gets_no_request() {
    let (port, requests) = untrusted_tls_server().await;
    let base_url = format!("https://localhost:{port}");

    // The server works for a client that trusts its certificate ...
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(TLS_CA).unwrap())
        .build()
        .unwrap();
    let answer = trusting
        .get(format!("{base_url}/api/v2/users/me.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // ... but zendesk-lake refuses the handshake before sending anything.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let token = "tls-token-5d1e";
    for args in [
        vec!["check"],
        vec!["sync", "--lake", lake.to_str().unwrap()],
    ] {
        let out = run(
            &args,
            &[
                ("ZENDESK_BASE_URL", base_url.as_str()),
                ("ZENDESK_EMAIL", "demo@example.com"),
                ("ZENDESK_API_TOKEN", token),
            ],
        )
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("TLS certificate was refused") && !stderr.contains("retrying"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains(token), "{stderr}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "no request got through");
    assert!(!lake.exists(), "nothing may be written");
}
