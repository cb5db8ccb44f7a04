//! A proxy on loopback between an object-store client and its emulator (moto, Azurite) that
//! loses the answers of requests the emulator applied: it forwards a request, waits for the
//! emulator's answer, and instead of relaying it either answers 503 (object_store retries, and
//! a conditional put then meets "already exists") or closes the connection (object_store does
//! not retry a conditional put, and cannot know whether it was applied).
//!
//! One request per connection, answered with `Connection: close`; request bodies must come with
//! a `Content-Length`, as object_store sends them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the answer of a chosen request is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Answered 503 Slow Down instead.
    SlowDown,
    /// The connection is closed without an answer.
    Close,
}

/// Which requests lose their answers, and how: of those whose method is `method` and whose
/// path contains one of `contains` and ends with `ends_with`, the numbers `losses` names
/// (counting from 1).
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub contains: Vec<String>,
    pub ends_with: &'static str,
    pub losses: Vec<(usize, Loss)>,
}

struct State {
    upstream: String,
    rule: Rule,
    seen: AtomicUsize,
    /// Requests whose answers were lost.
    lost: AtomicUsize,
    http: reqwest::Client,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str, rule: Rule) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            rule,
            seen: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            http: reqwest::Client::builder().no_gzip().build().unwrap(),
        });
        let accepting = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accepting.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &state).await;
                });
            }
        });
        Proxy {
            endpoint,
            state,
            task,
        }
    }

    /// How many answers were lost so far.
    pub fn lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

async fn serve(mut client: TcpStream, state: &State) -> std::io::Result<()> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default().to_owned(),
        request_line.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert!(
        header("transfer-encoding").is_none(),
        "the proxy needs request bodies with a Content-Length"
    );
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let mut request = state.http.request(
        method.parse().unwrap(),
        format!("{}{target}", state.upstream),
    );
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "accept-encoding" | "keep-alive"
        ) {
            request = request.header(name, value);
        }
    }
    let answer = match request.body(body).send().await {
        Ok(answer) => answer,
        Err(_) => {
            client
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let answer_body = answer.bytes().await.unwrap_or_default();

    let path = target.split('?').next().unwrap_or_default();
    let rule = &state.rule;
    let chosen = rule
        .contains
        .iter()
        .any(|part| path.contains(part.as_str()));
    if method == rule.method && chosen && path.ends_with(rule.ends_with) {
        let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let loss = rule
            .losses
            .iter()
            .find(|(at, _)| *at == n)
            .map(|(_, loss)| *loss);
        if let Some(loss) = loss.filter(|_| status.is_success()) {
            state.lost.fetch_add(1, Ordering::SeqCst);
            if loss == Loss::SlowDown {
                client
                    .write_all(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
            }
            return client.shutdown().await;
        }
    }

    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &answer_headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding" | "keep-alive"
        ) {
            out.push_str(&format!(
                "{name}: {}\r\n",
                value.to_str().unwrap_or_default()
            ));
        }
    }
    // A HEAD answer has no body but the length of the object.
    let length = match method.as_str() {
        "HEAD" => answer_headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_owned(),
        _ => answer_body.len().to_string(),
    };
    out.push_str(&format!(
        "content-length: {length}\r\nconnection: close\r\n\r\n"
    ));
    client.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        client.write_all(&answer_body).await?;
    }
    client.shutdown().await
}
