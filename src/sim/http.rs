//! A deliberately minimal HTTP/1.1 server for the simulator.
//!
//! One request per connection, answered with `Connection: close`: enough for reqwest (which then
//! opens a new connection per request) and small enough to need no server crate. The request
//! head is capped at 64 KiB; a body is read by its `Content-Length` (capped at 16 MiB: 413
//! beyond; a chunked body is refused with 411, which reqwest never sends for a known body).
//! Injected faults (`Faults`) may delay an answer, send only half of its body, or reset the
//! connection instead.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::api::{Action, Request, Response};
use super::Simulator;

const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body read; a larger `Content-Length` is answered 413 unread.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A client that opens a connection but never finishes its request head is dropped after this.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the task is aborted (which drops the listener).
pub(crate) async fn accept_loop(listener: TcpListener, sim: Simulator, base_url: Arc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sim = sim.clone();
                let base_url = Arc::clone(&base_url);
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(stream, &sim, &base_url).await {
                        tracing::debug!(%error, "simulator connection failed");
                    }
                });
            }
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

enum Head {
    /// The head (without the blank line) and the bytes read after it (the start of the body).
    Complete(Vec<u8>, Vec<u8>),
    Closed,
    TooLarge,
}

async fn serve_connection(
    mut stream: TcpStream,
    sim: &Simulator,
    base_url: &str,
) -> io::Result<()> {
    // Each connection carries one response that is sent whole; no reason to delay its packets.
    stream.set_nodelay(true)?;
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let action = match head {
        // A pooled connection closed by the client before sending anything is not a request.
        Head::Closed => return Ok(()),
        Head::TooLarge => {
            sim.record_request("<request head too large>");
            Action::Send(Response::error(431, "RequestHeaderFieldsTooLarge"))
        }
        Head::Complete(bytes, rest) => match parse_head(&bytes) {
            Some(mut request) => {
                match read_body(&mut stream, &request, rest).await? {
                    Ok(body) => request.body = body,
                    Err(response) => {
                        sim.record_request(&request.target);
                        write_response(&mut stream, &response, response.body.len()).await?;
                        return stream.shutdown().await;
                    }
                }
                // Only reads are cached: a write, or a job's status, changes the account.
                let cached = request.method == "GET" && !request.path.contains("job_statuses");
                if let Some(message) = cached.then(|| sim.replayed(&request.target)).flatten() {
                    stream.write_all(&message).await?;
                    return stream.shutdown().await;
                }
                // Runs in this connection's task, so a delayed answer holds up no other
                // connection.
                let action = sim.handle(&request, base_url).await;
                if let (true, Action::Send(response)) = (cached, &action) {
                    sim.rendered(&request.target, response);
                }
                action
            }
            None => {
                sim.record_request("<malformed request>");
                Action::Send(Response::error(400, "BadRequest"))
            }
        },
    };
    match action {
        Action::Send(response) => {
            write_response(&mut stream, &response, response.body.len()).await?
        }
        Action::Truncate(response) => {
            write_response(&mut stream, &response, response.body.len() / 2).await?;
        }
        Action::Reset => {
            // A zero linger turns the close on drop into a RST instead of a FIN.
            stream.set_zero_linger()?;
            return Ok(());
        }
    }
    stream.shutdown().await
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(&buf) {
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            return Ok(Head::Complete(buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The request's body by its `Content-Length` (none: empty), `rest` being what was read after
/// the head; or the answer that refuses it (411 chunked, 413 too large, 400 a bad length).
async fn read_body(
    stream: &mut TcpStream,
    request: &Request,
    mut rest: Vec<u8>,
) -> io::Result<Result<Vec<u8>, Response>> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Ok(Err(Response::error(411, "LengthRequired")));
    }
    let length = match header("content-length").map(|v| v.trim().parse::<usize>()) {
        None => 0,
        Some(Ok(length)) => length,
        Some(Err(_)) => return Ok(Err(Response::error(400, "BadRequest"))),
    };
    if length > MAX_BODY_BYTES {
        return Ok(Err(Response::error(413, "RequestEntityTooLarge")));
    }
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        while rest.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "request body cut short",
                ));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "request body")),
    }
    rest.truncate(length);
    Ok(Ok(rest))
}

/// Length of the head up to the blank line that ends it, if it has arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses the request line and headers; `None` when it is not HTTP/1.x.
pub(crate) fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    let version = request_line.next()?;
    if !version.starts_with("HTTP/1.") || request_line.next().is_some() {
        return None;
    }
    let url = if target.starts_with('/') {
        url::Url::parse(&format!("http://simulator.invalid{target}")).ok()?
    } else {
        url::Url::parse(target).ok()?
    };
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    Some(Request {
        method,
        path: url.path().to_string(),
        query: url.query_pairs().into_owned().collect(),
        headers,
        target,
        body: Vec::new(),
    })
}

/// Writes the head (announcing the whole body) and the first `send` bytes of the body.
async fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    send: usize,
) -> io::Result<()> {
    // One write, so Nagle's algorithm never holds back a short tail waiting for a delayed ACK.
    stream.write_all(&render(response, send)).await?;
    stream.flush().await
}

/// The whole HTTP message of a response, with only the first `send` bytes of its body.
pub(crate) fn render(response: &Response, send: usize) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(&response.body[..send.min(response.body.len())]);
    message
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origin_form_with_encoded_query() {
        let head = b"GET /api/v2/x.json?cursor=MTIz%3D%3D&per_page=7 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t";
        let request = parse_head(head).expect("valid head");
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/api/v2/x.json");
        assert_eq!(
            request.target,
            "/api/v2/x.json?cursor=MTIz%3D%3D&per_page=7"
        );
        assert_eq!(
            request.query,
            vec![
                ("cursor".to_string(), "MTIz==".to_string()),
                ("per_page".to_string(), "7".to_string())
            ]
        );
        assert!(request
            .headers
            .contains(&("authorization".to_string(), "Bearer t".to_string())));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_head(b"hello").is_none());
        assert!(parse_head(b"GET / SPDY/3\r\n").is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno-colon-here").is_none());
    }
}
