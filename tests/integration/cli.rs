//! The binary as a user runs it: exit codes, messages, the demo, status and query.

use std::process::Output;

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
    let tickets = stdout.lines().find(|l| l.starts_with("tickets")).unwrap();
    let rows: usize = tickets.split_whitespace().nth(2).unwrap().parse().unwrap();
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
async fn demo_syncs_the_simulated_account_and_a_rerun_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let out = run(&["sync", "--demo", "--lake", lake], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = text(&out.stdout);
    let out = run(&["sync", "--demo", "--lake", lake], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = text(&out.stdout);
    for object in OBJECTS {
        let fetched = |s: &str| -> u64 {
            let line = s.lines().find(|l| l.starts_with(object)).unwrap();
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert!(fetched(&first) > 0, "{first}");
        assert_eq!(fetched(&second), 0, "{second}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_credentials_and_readable_objects() {
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
async fn a_failed_object_makes_sync_exit_1_naming_object_and_endpoint() {
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
