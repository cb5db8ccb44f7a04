//! `zendesk-lake webhook register`: points Zendesk's webhooks at a `listen` endpoint, so that
//! the lake follows the account within minutes (docs/ARCHITECTURE.md, "Webhooks").
//!
//! What it makes, by the account's features:
//! - one webhook subscribed to the exact event types of the configured tables' streams
//!   (`webhook_subscriptions` in schemas/streams.json; Zendesk takes no wildcards);
//! - where the account refuses a stream's event types and Zendesk's triggers act on that
//!   stream's records (`webhook_via_trigger`: tickets), a second webhook at the same endpoint
//!   connected to triggers (Zendesk never lets one webhook do both), and a trigger "created or
//!   updated → notify it" whose body is a trigger delivery to `listen`
//!   ([`crate::webhooks::events::TRIGGER_EVENT`] and the subject; `listen` reads nothing else).
//!
//! Registering again finds what it made (webhooks by endpoint and connection, the trigger by
//! title) and updates it instead of making another; a create whose answer is lost
//! ([`zendesk::Error::may_have_applied`]) is looked up before it is sent again. Both webhooks
//! sign with one secret (the second is created with the first's), which goes to `--secret-file`
//! (mode 0600, written whole or not at all) and nowhere else: not the report, not the logs.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use tracing::{info, warn};
use url::{Host, Url};

use crate::config::{Secret, Settings};
use crate::spec::Stream;
use crate::sync::streams_of;
use crate::webhooks::events::TRIGGER_EVENT;
use crate::zendesk::writers::webhooks::{
    NewTrigger, NewWebhook, Trigger, Webhook, Webhooks, CONNECTED_TO_TRIGGERS,
};
use crate::zendesk::{self, Client, RequestStats};

/// The webhook's name when none is given.
pub const DEFAULT_NAME: &str = "zendesk-lake";

/// The variable `listen` reads the signing secret's file from.
pub const SECRET_FILE_VARIABLE: &str = "ZENDESK_WEBHOOK_SECRET_FILE";

/// A write whose answer was lost is looked up, then sent again, at most this many times in all.
const WRITE_ATTEMPTS: u32 = 3;

/// What to register.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Where Zendesk delivers: https, or http to loopback (tests, the demo).
    pub url: String,
    pub name: String,
    /// Where the signing secret is written (mode 0600).
    pub secret_file: PathBuf,
    /// The pipeline file `listen` is to run with, for the command line the report shows.
    pub pipeline: Option<PathBuf>,
}

impl RegisterOptions {
    pub fn new(url: impl Into<String>, secret_file: impl Into<PathBuf>) -> Self {
        RegisterOptions {
            url: url.into(),
            name: DEFAULT_NAME.to_owned(),
            secret_file: secret_file.into(),
            pipeline: None,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_pipeline(mut self, pipeline: impl Into<PathBuf>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }
}

/// What registering did to a webhook or trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    /// It already was as wanted: nothing was sent.
    Unchanged,
}

/// A webhook registered at the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredWebhook {
    pub id: String,
    pub name: String,
    /// Event types, or [`CONNECTED_TO_TRIGGERS`] alone.
    pub subscriptions: Vec<String>,
    pub applied: Applied,
}

/// The trigger that notifies the trigger-connected webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTrigger {
    pub id: i64,
    pub title: String,
    pub webhook_id: String,
    pub applied: Applied,
}

/// What `webhook register` did. Never holds the signing secret.
#[derive(Debug, Clone)]
pub struct RegisterReport {
    /// The endpoint URL, as Zendesk holds it.
    pub endpoint: String,
    /// The webhook subscribed to event types; `None` when every configured stream is reached
    /// through the trigger.
    pub webhook: Option<RegisteredWebhook>,
    /// The webhook connected to triggers, when the account refused event types of streams a
    /// trigger reaches.
    pub trigger_webhook: Option<RegisteredWebhook>,
    pub trigger: Option<RegisteredTrigger>,
    /// Event types the account refused, delivered through the trigger instead.
    pub refused: Vec<String>,
    pub secret_file: PathBuf,
    /// The command to run to receive the deliveries.
    pub listen_command: String,
}

impl RegisterReport {
    /// The webhook whose signing secret is in the file (both sign alike when there are two).
    pub fn webhook_id(&self) -> &str {
        self.webhook
            .as_ref()
            .or(self.trigger_webhook.as_ref())
            .map_or("", |w| w.id.as_str())
    }

    /// Every webhook registered, the event-subscribed one first.
    pub fn webhooks(&self) -> impl Iterator<Item = &RegisteredWebhook> {
        self.webhook.iter().chain(self.trigger_webhook.iter())
    }
}

/// Why registering failed. Never carries a credential or the signing secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "none of the configured tables' streams has webhook event types: nothing to subscribe to"
    )]
    NothingToSubscribe,
    #[error("cannot build the Zendesk client: {0}")]
    Client(String),
    #[error(transparent)]
    Zendesk(#[from] zendesk::Error),
    #[error(
        "{endpoint}: webhooks {events} and {triggers} sign with different secrets, and `listen` \
         verifies one; delete {triggers} in Zendesk and register again (it is recreated with \
         the secret of {events})"
    )]
    SecretsDiffer {
        endpoint: String,
        events: String,
        triggers: String,
    },
    #[error("{}: cannot write the signing secret: {source}", path.display())]
    SecretFile { path: PathBuf, source: io::Error },
}

/// Create, or update, the webhooks (and the trigger) that deliver the configured tables'
/// changes to `options.url`, write the signing secret to `options.secret_file` and return what
/// was done with the `listen` command to run.
pub async fn register(
    settings: &Settings,
    options: &RegisterOptions,
) -> Result<RegisterReport, Error> {
    let endpoint = checked_url(&options.url)?;
    let streams: Vec<&Stream> = streams_of(&settings.tables)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let wanted = subscriptions(&streams, |_| true);
    if wanted.is_empty() {
        return Err(Error::NothingToSubscribe);
    }
    let via_trigger = subscriptions(&streams, |s| s.webhook_via_trigger);
    let client = Client::try_new(&settings.zendesk).map_err(Error::Client)?;
    let stats = RequestStats::default();
    let api = Webhooks::new(&client, &stats);
    info!(endpoint = %endpoint, subscriptions = wanted.len(), "webhook register started");

    let listed = api.list().await?;
    let events_hook = ours(&listed, &endpoint, false);
    let triggers_hook = ours(&listed, &endpoint, true);
    let name = options.name.as_str();

    // The event-subscribed webhook, with every event type; without those a trigger reaches
    // when the account refuses them (Zendesk answers 400 and applies nothing).
    let sibling = triggers_hook.map(|w| w.id.as_str());
    let mut refused = Vec::new();
    let desired = NewWebhook::new(name, endpoint.as_str(), wanted.clone());
    let webhook = match put_or_create(&api, &endpoint, events_hook, desired, sibling).await {
        Ok(webhook) => Some(webhook),
        Err(e) if e.status() == Some(400) && !via_trigger.is_empty() => {
            info!(error = %e, "the account refused event types a trigger can stand in for");
            refused = via_trigger.clone();
            let rest: Vec<String> = wanted
                .iter()
                .filter(|s| !refused.contains(s))
                .cloned()
                .collect();
            if rest.is_empty() {
                None
            } else {
                let desired = NewWebhook::new(name, endpoint.as_str(), rest);
                Some(put_or_create(&api, &endpoint, events_hook, desired, sibling).await?)
            }
        }
        Err(e) => return Err(e.into()),
    };

    let (trigger_webhook, trigger) = if refused.is_empty() {
        (None, None)
    } else {
        let desired = NewWebhook::new(name, endpoint.as_str(), vec![CONNECTED_TO_TRIGGERS.into()]);
        let sibling = webhook.as_ref().map(|w| w.id.as_str());
        let hook = put_or_create(&api, &endpoint, triggers_hook, desired, sibling).await?;
        let trigger = notify(&api, name, &hook.id).await?;
        (Some(hook), Some(trigger))
    };

    let primary = webhook
        .as_ref()
        .or(trigger_webhook.as_ref())
        .map(|w| w.id.clone())
        .unwrap_or_default();
    let secret = api.signing_secret(&primary).await?;
    if let (Some(events), Some(triggers)) = (&webhook, &trigger_webhook) {
        let other = api.signing_secret(&triggers.id).await?;
        if other.expose() != secret.expose() {
            return Err(Error::SecretsDiffer {
                endpoint: endpoint.to_string(),
                events: events.id.clone(),
                triggers: triggers.id.clone(),
            });
        }
    }
    write_secret(&options.secret_file, &secret).map_err(|source| Error::SecretFile {
        path: options.secret_file.clone(),
        source,
    })?;
    let report = RegisterReport {
        endpoint: endpoint.to_string(),
        webhook,
        trigger_webhook,
        trigger,
        refused,
        secret_file: options.secret_file.clone(),
        listen_command: listen_command(&options.secret_file, options.pipeline.as_deref()),
    };
    info!(
        webhook = %report.webhook_id(),
        webhooks = report.webhooks().count(),
        trigger = report.trigger.is_some(),
        requests = stats.requests(),
        "webhook register finished"
    );
    Ok(report)
}

/// The exact event types of `streams` that pass `keep`, in order, each once.
fn subscriptions(streams: &[&Stream], keep: impl Fn(&Stream) -> bool) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for stream in streams.iter().filter(|s| keep(s)) {
        for subscription in &stream.webhook_subscriptions {
            if !all.contains(subscription) {
                all.push(subscription.clone());
            }
        }
    }
    all
}

/// https anywhere, http only to loopback (tests and the demo); never credentials in the URL.
fn checked_url(raw: &str) -> Result<Url, Error> {
    let refuse = |url: String, reason: &str| Error::Url {
        url,
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| refuse("(as given)".into(), &e.to_string()))?;
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    );
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            shown,
            "credentials in the URL would be stored in Zendesk as the webhook's endpoint; \
             protect the endpoint otherwise (the signature already proves a delivery genuine)",
        ));
    }
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(refuse(
            shown,
            "must be https (http only to loopback, for tests): deliveries carry account data",
        )),
        _ => Err(refuse(shown, "must be an https URL")),
    }
}

/// The first webhook at `endpoint` connected to triggers (`triggers`) or subscribed to events.
fn ours<'a>(listed: &'a [Webhook], endpoint: &Url, triggers: bool) -> Option<&'a Webhook> {
    let mut matching = listed.iter().filter(|w| {
        w.connected_to_triggers() == triggers
            && Url::parse(&w.endpoint).ok().as_ref() == Some(endpoint)
    });
    let first = matching.next();
    let more: Vec<&str> = matching.map(|w| w.id.as_str()).collect();
    if let (Some(first), false) = (first, more.is_empty()) {
        warn!(kept = %first.id, others = ?more, "several webhooks deliver to this endpoint; updating the first");
    }
    first
}

/// Bring `existing` to `desired`, or create it (with `sibling`'s signing secret, so that both
/// webhooks of the endpoint sign alike). A write whose answer was lost is looked up before it is
/// sent again.
async fn put_or_create(
    api: &Webhooks<'_>,
    endpoint: &Url,
    existing: Option<&Webhook>,
    desired: NewWebhook,
    sibling: Option<&str>,
) -> Result<RegisteredWebhook, zendesk::Error> {
    let registered = |id: &str, applied| RegisteredWebhook {
        id: id.to_owned(),
        name: desired.name.clone(),
        subscriptions: desired.subscriptions.clone(),
        applied,
    };
    if let Some(existing) = existing {
        if desired.is_applied_to(existing) {
            return Ok(registered(&existing.id, Applied::Unchanged));
        }
        for attempt in 1..=WRITE_ATTEMPTS {
            match api.update(&existing.id, &desired).await {
                Ok(()) => return Ok(registered(&existing.id, Applied::Updated)),
                Err(e) if e.may_have_applied() && attempt < WRITE_ATTEMPTS => {
                    warn!(error = %e, webhook = %existing.id, "the update may have applied; reading the webhook");
                    if desired.is_applied_to(&api.get(&existing.id).await?) {
                        return Ok(registered(&existing.id, Applied::Updated));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    let desired = match sibling {
        Some(sibling) => desired
            .clone()
            .with_signing_secret(api.signing_secret(sibling).await?),
        None => desired.clone(),
    };
    let triggers = desired
        .subscriptions
        .iter()
        .any(|s| s == CONNECTED_TO_TRIGGERS);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&desired).await {
            Ok(created) => return Ok(registered(&created.id, Applied::Created)),
            Err(e) if e.may_have_applied() && attempt < WRITE_ATTEMPTS => {
                warn!(error = %e, "the webhook may have been created; listing before creating it again");
                let listed = api.list().await?;
                if let Some(found) = ours(&listed, endpoint, triggers) {
                    return Ok(registered(&found.id, Applied::Created));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The trigger's title: how registering finds it again.
fn trigger_title(name: &str) -> String {
    format!("zendesk-lake: notify {name}")
}

/// Create or update the trigger "created or updated → notify `webhook_id`".
async fn notify(
    api: &Webhooks<'_>,
    name: &str,
    webhook_id: &str,
) -> Result<RegisteredTrigger, zendesk::Error> {
    let title = trigger_title(name);
    // `listen` reads a delivery's event type and subject, nothing else.
    let payload = serde_json::json!({
        "type": TRIGGER_EVENT,
        "subject": "zen:ticket:{{ticket.id}}",
    })
    .to_string();
    let desired = NewTrigger::notify(
        &title,
        "Tells zendesk-lake's listener that a ticket changed (made by `zendesk-lake webhook register`).",
        webhook_id,
        &payload,
    );
    let find = |triggers: Vec<Trigger>| {
        let by_title = triggers.iter().position(|t| t.title == title);
        let by_target = || {
            triggers
                .iter()
                .position(|t| t.notified_webhooks().contains(&webhook_id))
        };
        by_title.or_else(by_target).map(|i| triggers[i].clone())
    };
    let registered = |id: i64, applied| RegisteredTrigger {
        id,
        title: title.clone(),
        webhook_id: webhook_id.to_owned(),
        applied,
    };
    if let Some(existing) = find(api.triggers().await?) {
        if desired.is_applied_to(&existing) {
            return Ok(registered(existing.id, Applied::Unchanged));
        }
        for attempt in 1..=WRITE_ATTEMPTS {
            match api.update_trigger(existing.id, &desired).await {
                Ok(updated) => return Ok(registered(updated.id, Applied::Updated)),
                Err(e) if e.may_have_applied() && attempt < WRITE_ATTEMPTS => {
                    warn!(error = %e, trigger = existing.id, "the update may have applied; reading the triggers");
                    if let Some(now) = find(api.triggers().await?) {
                        if desired.is_applied_to(&now) {
                            return Ok(registered(now.id, Applied::Updated));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create_trigger(&desired).await {
            Ok(created) => return Ok(registered(created.id, Applied::Created)),
            Err(e) if e.may_have_applied() && attempt < WRITE_ATTEMPTS => {
                warn!(error = %e, "the trigger may have been created; listing before creating it again");
                if let Some(found) = find(api.triggers().await?) {
                    return Ok(registered(found.id, Applied::Created));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Write `secret` to `path` with mode 0600: into a new file beside it, then renamed over it, so
/// a reader sees the old secret or the new one, never part of one, and never a file others can
/// read (the mode is set at creation; umask can only remove bits).
fn write_secret(path: &Path, secret: &Secret) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let nonce: u64 = rand::random();
    let temporary = dir.join(format!(
        ".{}.{}-{nonce:016x}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(secret.expose().as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // The rename is durable once the directory is.
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// `ZENDESK_WEBHOOK_SECRET_FILE=… zendesk-lake listen [--pipeline …]`, quoted for a POSIX shell.
fn listen_command(secret_file: &Path, pipeline: Option<&Path>) -> String {
    let mut command = format!(
        "{SECRET_FILE_VARIABLE}={} zendesk-lake listen",
        quoted(&secret_file.to_string_lossy())
    );
    if let Some(pipeline) = pipeline {
        command.push_str(" --pipeline ");
        command.push_str(&quoted(&pipeline.to_string_lossy()));
    }
    command
}

fn quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn only_https_or_http_to_loopback_is_accepted() {
        for ok in [
            "https://lake.example.com/webhooks/zendesk",
            "http://127.0.0.1:8080/webhooks/zendesk",
            "http://[::1]:8080/webhooks/zendesk",
            "http://localhost:9/webhooks/zendesk",
        ] {
            assert!(checked_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://lake.example.com/webhooks/zendesk",
            "http://10.0.0.1/webhooks/zendesk",
            "ftp://lake.example.com/x",
            "not a url",
            "https://user:hunter2@lake.example.com/webhooks/zendesk",
        ] {
            let err = checked_url(bad).unwrap_err();
            assert!(matches!(err, Error::Url { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn the_secret_file_is_replaced_whole_and_stays_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_secret(&path, &Secret::new("first")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&path, &Secret::new("second")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        let missing = dir.path().join("no/such/dir/secret");
        assert!(write_secret(&missing, &Secret::new("x")).is_err());
    }

    #[test]
    fn the_listen_command_names_the_secret_file_and_pipeline_quoted() {
        assert_eq!(
            listen_command(Path::new("/run/secrets/zd"), Some(Path::new("p.toml"))),
            "ZENDESK_WEBHOOK_SECRET_FILE=/run/secrets/zd zendesk-lake listen --pipeline p.toml"
        );
        assert_eq!(
            listen_command(Path::new("/tmp/my secret's"), None),
            r"ZENDESK_WEBHOOK_SECRET_FILE='/tmp/my secret'\''s' zendesk-lake listen"
        );
    }
}
