//! The Zendesk API surface of the simulator: faults, authentication, routing and the export
//! endpoints' paging rules, independent of the socket code in `http.rs`.
//!
//! The paging rules are the ones that decide whether a client is correct against real Zendesk
//! (docs/ARCHITECTURE.md, "Zendesk facts"): cursor exports order by (generated_timestamp | updated_at, id) and resume
//! strictly after an opaque cursor; the time export never splits a second, so the next page repeats
//! the boundary second; a `start_time` less than 60 s old is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::content::Kind;
use super::data::{Object, State};
use super::endpoints;
use super::{Faults, Simulator};

/// Zendesk's largest page for incremental exports.
const MAX_PER_PAGE: usize = 1000;
/// Zendesk refuses start times younger than this.
const HOLD_BACK_SECS: i64 = 60;
/// Where `Faults::foreign_next_url` points export links.
const FOREIGN_BASE_URL: &str = "https://evil.example.com";

/// A parsed request, as far as the simulator cares.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Percent-decoded query pairs, in order.
    pub(crate) query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// Path and raw query as received, for the request log.
    pub(crate) target: String,
    /// The body (empty without one), read by its Content-Length.
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the connection does with a request once it is answered.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Send the response whole.
    Send(Response),
    /// Send the head with the full Content-Length but only the first half of the body, then
    /// close (`Faults::truncate_every`).
    Truncate(Response),
    /// Close the connection without sending a byte (`Faults::reset_every`, and
    /// `Faults::lose_write_answer_every` once the write is applied).
    Reset,
}

#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        // Serializing a Value cannot fail: its map keys are strings.
        Self::raw(status, serde_json::to_vec(body).unwrap_or_default())
    }

    /// A body that is already JSON text (or, for hostile-payload tests, meant to look like it).
    pub(crate) fn raw(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body,
        }
    }

    /// The kind of page a proxy or load balancer puts in front of an API (`Faults::html_every`).
    fn html() -> Self {
        Self {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: concat!(
                "<!DOCTYPE html>\n",
                "<html><head><title>Service Unavailable</title></head>\n",
                "<body><h1>Service Unavailable</h1>",
                "<p>The server is temporarily unable to service your request.</p></body></html>\n",
            )
            .as_bytes()
            .to_vec(),
        }
    }

    /// `{"<name>": [records...], <fields of tail>}`, splicing in the records' stored JSON text
    /// instead of cloning and re-serializing them.
    pub(crate) fn page(name: &str, records: &[&str], tail: &Value) -> Self {
        Self::page_with(name, records, &[], tail)
    }

    /// [`Response::page`] with more arrays of JSON text after the records (sideloads, e.g.
    /// `metric_sets`), before the fields of `tail`.
    pub(crate) fn page_with(
        name: &str,
        records: &[&str],
        sideloads: &[(&str, &[&str])],
        tail: &Value,
    ) -> Self {
        let tail = tail.to_string();
        let texts = |items: &[&str]| items.iter().map(|r| r.len() + 1).sum::<usize>();
        let size = texts(records)
            + sideloads
                .iter()
                .map(|(key, items)| key.len() + 5 + texts(items))
                .sum::<usize>()
            + name.len()
            + tail.len();
        let mut body = Vec::with_capacity(size + 8);
        // Names and keys are the simulator's own constants, which need no escaping.
        let array = |body: &mut Vec<u8>, key: &str, items: &[&str]| {
            body.push(b'"');
            body.extend_from_slice(key.as_bytes());
            body.extend_from_slice(b"\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(item.as_bytes());
            }
            body.push(b']');
        };
        body.push(b'{');
        array(&mut body, name, records);
        for (key, items) in sideloads {
            body.push(b',');
            array(&mut body, key, items);
        }
        match tail.strip_prefix('{') {
            Some(rest) if rest != "}" => {
                body.push(b',');
                body.extend_from_slice(rest.as_bytes());
            }
            _ => body.push(b'}'),
        }
        Self::raw(200, body)
    }

    pub(crate) fn error(status: u16, error: &str) -> Self {
        Self::json(status, &json!({ "error": error }))
    }

    pub(crate) fn invalid(description: &str) -> Self {
        Self::json(
            400,
            &json!({"error": "InvalidValue", "description": description}),
        )
    }
}

impl Simulator {
    /// Answers one request: numbers and logs it, applies faults, checks credentials, routes.
    /// Waits (without holding any lock) when `Faults::delay_every` hits it.
    pub(crate) async fn handle(&self, request: &Request, base_url: &str) -> Action {
        let number = self.record_request(&request.target);
        let write = (request.method != "GET").then(|| self.record_write(request));
        let faults = self.faults();
        let hits = |every| hits(every, number);
        if hits(faults.reset_every) {
            tracing::debug!(number, path = %request.target, "simulated connection reset");
            return Action::Reset;
        }
        if hits(faults.delay_every) {
            tokio::time::sleep(std::time::Duration::from_millis(faults.delay_ms)).await;
        }
        let injected = error_fault(&faults, number);
        // A 429 or 5xx outranks truncation and is sent whole; truncation outranks the HTML page.
        let truncate = injected.is_none() && hits(faults.truncate_every);
        let mut response = if let Some(response) = injected {
            response
        } else if !truncate && hits(faults.html_every) {
            Response::html()
        } else if !self.authorized(request.header("authorization")) {
            Response::error(401, "Couldn't authenticate you")
        } else if let Some(response) = denied(&faults, &request.path) {
            response
        } else if let Some(response) = self.meter().spend(&request.path, std::time::Instant::now())
        {
            response
        } else {
            let export = Export {
                link_base: if faults.foreign_next_url {
                    FOREIGN_BASE_URL
                } else {
                    base_url
                },
                max_page_size: faults
                    .max_page_size
                    .filter(|_| faults.max_page_size_until.is_none_or(|last| number <= last)),
                stall_over: faults.stall_time_export_over,
                empty_page: hits(faults.empty_page_every),
                duplicate_first: hits(faults.duplicate_in_page_every),
                whole_page: faults.paginate_whole_lists,
            };
            self.route_jobs(request, base_url)
                .or_else(|| self.route_webhooks(request, base_url))
                .unwrap_or_else(|| self.route(request, &export))
        };
        // An injected 429 (`rate_limit_every`) is a passing fault, not a spent budget: the
        // headers say what the budgets hold (a 429 of a spent budget says 0 by itself).
        let exhausted = hits(faults.budget_exhausted_every);
        response.headers.extend(self.meter().headers(
            &request.path,
            std::time::Instant::now(),
            exhausted,
            faults.budget_reset.clone(),
        ));
        tracing::debug!(number, status = response.status, truncate, path = %request.target, "simulated request");
        if write.is_some_and(|write| self::hits(faults.lose_write_answer_every, write)) {
            tracing::debug!(number, path = %request.target, "simulated lost answer of an applied write");
            return Action::Reset;
        }
        if truncate {
            Action::Truncate(response)
        } else {
            Action::Send(response)
        }
    }

    fn authorized(&self, header: Option<&str>) -> bool {
        let Some((scheme, credentials)) = header.and_then(|h| h.trim().split_once(' ')) else {
            return false;
        };
        let config = &self.inner.config;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let expected = format!("{}/token:{}", config.email, config.api_token);
            STANDARD
                .decode(credentials)
                .is_ok_and(|decoded| decoded == expected.as_bytes())
        } else if scheme.eq_ignore_ascii_case("bearer") {
            credentials == config.oauth_token
        } else {
            false
        }
    }

    fn route(&self, request: &Request, export: &Export<'_>) -> Response {
        if request.method != "GET" {
            return Response::error(404, "InvalidEndpoint");
        }
        // Zendesk answers with and without the ".json" suffix.
        let path = request.path.strip_suffix(".json").unwrap_or(&request.path);
        let state = self.state();
        match path {
            "/api/v2/users/me" => match state.admin() {
                Some(user) => Response::raw(200, format!("{{\"user\":{user}}}").into_bytes()),
                None => Response::error(404, "RecordNotFound"),
            },
            "/api/v2/incremental/tickets/cursor" => {
                cursor_export(&state, Object::Tickets, request, export)
            }
            "/api/v2/incremental/users/cursor" => {
                cursor_export(&state, Object::Users, request, export)
            }
            "/api/v2/incremental/organizations" => {
                time_export(&state, Object::Organizations, request, export)
            }
            "/api/v2/incremental/ticket_events" => {
                endpoints::ticket_events(&state, request, export)
            }
            "/api/v2/incremental/ticket_metric_events" => {
                super::metric_events::endpoint(&state, request, export)
            }
            "/api/v2/satisfaction_ratings" => {
                super::ratings::endpoint(&state.ratings, request, export)
            }
            "/api/v2/tags" => super::tags::endpoint(&state, request, export),
            "/api/v2/help_center/incremental/articles" => {
                endpoints::articles_export(&state, request, export)
            }
            _ => {
                if let Some(kind) = Kind::from_path(path) {
                    endpoints::list(&state, kind, request, export)
                } else if let Some(ticket) = path
                    .strip_prefix("/api/v2/tickets/")
                    .and_then(|rest| rest.strip_suffix("/side_conversations"))
                {
                    endpoints::side_conversations(&state, ticket, request, export)
                } else {
                    Response::error(404, "InvalidEndpoint")
                }
            }
        }
    }
}

/// `Faults::deny`: the answer of a plan-gated path, if `path` is one.
fn denied(faults: &Faults, path: &str) -> Option<Response> {
    let (_, status) = faults
        .deny
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))?;
    Some(match status {
        404 => Response::error(404, "InvalidEndpoint"),
        &status => Response::error(status, "Forbidden"),
    })
}

/// Whether an "every n-th request" rule hits request `number` (1-based): n, 2n, ...; 0 never.
fn hits(every: Option<u64>, number: u64) -> bool {
    every.is_some_and(|n| n > 0 && number.is_multiple_of(n))
}

/// The injected 429 or 5xx for request `number` (1-based), if any.
fn error_fault(faults: &Faults, number: u64) -> Option<Response> {
    if hits(faults.rate_limit_every, number) {
        let mut response = Response::error(429, "TooManyRequests");
        if let Some(retry_after) = &faults.retry_after {
            response.headers.push(("retry-after", retry_after.clone()));
        }
        return Some(response);
    }
    if hits(faults.server_error_every, number)
        || faults.fail_from_request.is_some_and(|f| number >= f)
    {
        let status = faults.server_error_status.unwrap_or(500);
        let error = match status {
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "InternalServerError",
        };
        return Some(Response::error(status, error));
    }
    None
}

/// What the export endpoints need besides the request: where their links point and the per-page
/// faults that hit this request.
pub(crate) struct Export<'a> {
    /// Base of `after_url` / `next_page` / `links`.
    pub(crate) link_base: &'a str,
    pub(crate) max_page_size: Option<usize>,
    pub(crate) stall_over: Option<usize>,
    pub(crate) empty_page: bool,
    pub(crate) duplicate_first: bool,
    /// `Faults::paginate_whole_lists`.
    pub(crate) whole_page: Option<usize>,
}

impl Export<'_> {
    /// The 504 Zendesk gives when a page is too heavy to build in time.
    pub(crate) fn too_large(&self, per_page: usize) -> Option<Response> {
        self.max_page_size
            .is_some_and(|max| per_page > max)
            .then(|| Response::error(504, "GatewayTimeout"))
    }

    /// `Faults::duplicate_in_page_every`: the first record twice, side by side.
    pub(crate) fn duplicate(&self, page: &mut Vec<&str>) {
        if self.duplicate_first {
            if let Some(&first) = page.first() {
                page.insert(1, first);
            }
        }
    }
}

fn per_page(request: &Request) -> Result<usize, Response> {
    match request.param("per_page") {
        None => Ok(MAX_PER_PAGE),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(0) | Err(_) => Err(Response::invalid("per_page must be a positive integer")),
            Ok(n) => Ok(n.min(MAX_PER_PAGE)),
        },
    }
}

/// A `start_time` Zendesk would accept: a non-negative integer at least 60 s in the past.
fn start_time(raw: &str, now: i64) -> Result<i64, Response> {
    let Ok(start) = raw.trim().parse::<i64>() else {
        return Err(Response::invalid("start_time must be an integer"));
    };
    if start < 0 {
        return Err(Response::invalid("start_time must not be negative"));
    }
    if start > now - HOLD_BACK_SECS {
        let description = "Too recent start_time. Use a start_time older than 1 minute";
        return Err(Response::json(
            400,
            &json!({
                "error": "InvalidValue",
                "description": description,
                "details": {"start_time": [{"error": "StartTimeTooRecent", "description": description}]},
            }),
        ));
    }
    Ok(start)
}

/// Zendesk-looking opaque cursor: base64 of "{key}.0||{id}|".
pub(crate) fn encode_cursor(key: i64, id: i64) -> String {
    STANDARD.encode(format!("{key}.0||{id}|"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<(i64, i64)> {
    let bytes = STANDARD.decode(cursor.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (key, id) = text.strip_suffix('|')?.split_once("||")?;
    let key = key.strip_suffix(".0").unwrap_or(key).parse().ok()?;
    Some((key, id.parse().ok()?))
}

/// Whether the request's `include` (comma-separated) names `sideload`.
pub(crate) fn includes(request: &Request, sideload: &str) -> bool {
    request
        .param("include")
        .is_some_and(|list| list.split(',').any(|item| item.trim() == sideload))
}

pub(crate) fn encode_param(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn cursor_export(
    state: &State,
    object: Object,
    request: &Request,
    export: &Export<'_>,
) -> Response {
    let per_page = match per_page(request) {
        Ok(n) => n,
        Err(response) => return response,
    };
    let (start, passed) = if let Some(cursor) = request.param("cursor") {
        match decode_cursor(cursor) {
            Some(position) => (position, Some(cursor.to_string())),
            None => return Response::invalid("Invalid cursor"),
        }
    } else if let Some(raw) = request.param("start_time") {
        match start_time(raw, state.now) {
            // Ids are positive, so "after (start, 0)" is "key >= start".
            Ok(start) => ((start, 0), None),
            Err(response) => return response,
        }
    } else {
        return Response::invalid("start_time or cursor is required");
    };
    if let Some(response) = export.too_large(per_page) {
        return response;
    }

    let metric_sets = object == Object::Tickets && includes(request, "metric_sets");
    let table = state.table(object);
    let mut page = Vec::with_capacity(per_page.min(64));
    let mut metrics = Vec::new();
    let mut last = None;
    let end_of_stream = if export.empty_page {
        false
    } else {
        let mut rows = table.after(start.0, start.1);
        for (key, id, value) in rows.by_ref().take(per_page) {
            page.push(value);
            last = Some((key, id));
            // One metric set per ticket of the page that is not deleted.
            if metric_sets && !table.is_deleted(id) {
                metrics.extend(state.activity.metric(id));
            }
        }
        rows.next().is_none()
    };
    export.duplicate(&mut page);
    let after_cursor = match (last, passed) {
        (Some((key, id)), _) => encode_cursor(key, id),
        (None, Some(passed)) => passed,
        (None, None) => encode_cursor(start.0, start.1),
    };
    let mut after_url = format!(
        "{}/api/v2/incremental/{}/cursor.json?cursor={}",
        export.link_base,
        object.name(),
        encode_param(&after_cursor)
    );
    if request.param("per_page").is_some() {
        after_url.push_str(&format!("&per_page={per_page}"));
    }
    if metric_sets {
        after_url.push_str("&include=metric_sets");
    }
    let sideloads: &[(&str, &[&str])] = if metric_sets {
        &[("metric_sets", &metrics)]
    } else {
        &[]
    };
    Response::page_with(
        object.name(),
        &page,
        sideloads,
        &json!({
            "after_cursor": after_cursor,
            "after_url": after_url,
            "before_cursor": null,
            "before_url": null,
            "end_of_stream": end_of_stream,
        }),
    )
}

/// `start_time` and `per_page` of a time export, or the answer that refuses it (a bad value, a
/// start time inside the hold-back, `Faults::max_page_size`).
pub(crate) fn time_params(
    state: &State,
    request: &Request,
    export: &Export<'_>,
) -> Result<(i64, usize), Response> {
    let per_page = per_page(request)?;
    let start = match request.param("start_time") {
        Some(raw) => start_time(raw, state.now)?,
        None => return Err(Response::invalid("start_time is required")),
    };
    match export.too_large(per_page) {
        Some(response) => Err(response),
        None => Ok((start, per_page)),
    }
}

/// One page of a time export.
pub(crate) struct TimePage<T> {
    pub(crate) records: Vec<T>,
    pub(crate) end_time: i64,
    pub(crate) end_of_stream: bool,
}

/// The records of one time-export page from `rows()` (records from second `start` on, in
/// (second, id) order; called again for a second pass): never splits a second, so the page runs
/// past `per_page` to finish its last second and the next page repeats that second.
/// `stall_over` is `Faults::stall_time_export_over`.
pub(crate) fn time_page<T, I>(
    rows: impl Fn() -> I,
    start: i64,
    per_page: usize,
    stall_over: Option<usize>,
) -> TimePage<T>
where
    I: Iterator<Item = (i64, T)>,
{
    let mut page = Vec::with_capacity(per_page.min(64));
    let mut end_time = start;
    let end_of_stream = match stall_over {
        // Zendesk's answer when the start second alone overflows a page: a page of that second
        // cut at per_page, again and again.
        Some(limit) if rows().nth(limit).is_some_and(|(key, _)| key == start) => {
            page.extend(
                rows()
                    .take_while(|(key, _)| *key == start)
                    .take(per_page)
                    .map(|(_, value)| value),
            );
            false
        }
        _ => {
            let mut rows = rows().peekable();
            while let Some((key, value)) = rows.next_if(|_| page.len() < per_page) {
                page.push(value);
                end_time = key;
            }
            // A page never splits a second: take the rest of the last record's second too.
            if !page.is_empty() {
                while let Some((_, value)) = rows.next_if(|(key, _)| *key == end_time) {
                    page.push(value);
                }
            }
            rows.peek().is_none()
        }
    };
    TimePage {
        records: page,
        end_time,
        end_of_stream,
    }
}

fn time_export(state: &State, object: Object, request: &Request, export: &Export<'_>) -> Response {
    let (start, per_page) = match time_params(state, request, export) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let table = state.table(object);
    let TimePage {
        records: mut page,
        end_time,
        end_of_stream,
    } = time_page(
        || {
            table
                .after(start, i64::MIN)
                .map(|(key, _, value)| (key, value))
        },
        start,
        per_page,
        export.stall_over,
    );
    export.duplicate(&mut page);
    let mut next_page = format!(
        "{}/api/v2/incremental/{}.json?start_time={end_time}",
        export.link_base,
        object.name()
    );
    if request.param("per_page").is_some() {
        next_page.push_str(&format!("&per_page={per_page}"));
    }
    Response::page(
        object.name(),
        &page,
        &json!({
            "count": page.len(),
            "end_of_stream": end_of_stream,
            "end_time": end_time,
            "next_page": next_page,
        }),
    )
}
