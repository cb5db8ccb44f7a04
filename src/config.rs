//! Pipeline file + environment → validated [`Settings`].
//!
//! The raw TOML structs deny unknown fields and carry the defaults; [`Settings::resolve`] turns them
//! into settings once, so nothing downstream re-validates. Credentials come only from the
//! environment and live in [`Secret`], whose Debug and Display print `***`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::lake::maintenance::{self, Policy};
use crate::spec::{self, Table};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline file {path} is invalid: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// A credential. Debug and Display never show it; [`Secret::expose`] is called where the auth
/// header is built and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Basic `{email}/token:{api_token}`.
    ApiToken { email: String, token: Secret },
    /// Bearer OAuth access token.
    OAuth { token: Secret },
}

/// The pipeline file as written (`pipelines/*.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Lake URI: a local path, `file://`, or an object-store URI.
    pub lake: Option<String>,
    /// Tables to sync; the default set when absent (`objects`, its older name, is read too).
    #[serde(alias = "objects")]
    pub tables: Option<Vec<String>>,
    /// Unix seconds from which the first sync of a stream exports.
    #[serde(default)]
    pub start_time: i64,
    #[serde(default)]
    pub zendesk: ZendeskFile,
    #[serde(default)]
    pub sync: SyncFile,
    #[serde(default)]
    pub maintenance: MaintenanceFile,
    /// object_store options (`aws_region`, `azure_storage_account_name`, ...).
    #[serde(default)]
    pub storage: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZendeskFile {
    pub subdomain: Option<String>,
    pub base_url: Option<String>,
    pub timeout_secs: u64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
    pub account_requests_per_minute: u32,
    pub incremental_requests_per_minute: u32,
}

impl Default for ZendeskFile {
    fn default() -> Self {
        ZendeskFile {
            subdomain: None,
            base_url: None,
            timeout_secs: 30,
            max_attempts: 6,
            retry_base_ms: 500,
            retry_max_secs: 120,
            account_requests_per_minute: 700,
            incremental_requests_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncFile {
    /// Records asked for per export page (Zendesk's maximum is 1000).
    pub page_size: u32,
    /// Rows gathered from many pages before one Delta commit.
    pub commit_rows: usize,
    /// Pages buffered between the fetch, decode and write stages.
    pub channel_pages: usize,
}

impl Default for SyncFile {
    fn default() -> Self {
        SyncFile {
            page_size: 1000,
            commit_rows: 50_000,
            channel_pages: 8,
        }
    }
}

/// `[maintenance]`: what a sync does to keep the tables' files few (docs/ARCHITECTURE.md,
/// "Layout and maintenance").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceFile {
    /// Compact a table after a sync when it has more than `small_files` small files.
    pub auto_optimize: bool,
    /// Small files (under a quarter of `target_file_size_mb`) a table may have.
    pub small_files: usize,
    /// File size compaction and `zendesk-lake optimize` aim for.
    pub target_file_size_mb: u64,
    /// Merges hide replaced rows with deletion vectors instead of rewriting their files (readers
    /// need Delta reader version 3 with `deletionVectors`; off by default, as some readers,
    /// Polars among them, refuse such tables).
    pub deletion_vectors: bool,
}

impl Default for MaintenanceFile {
    fn default() -> Self {
        MaintenanceFile {
            auto_optimize: true,
            small_files: maintenance::DEFAULT_SMALL_FILES,
            target_file_size_mb: maintenance::DEFAULT_TARGET_FILE_SIZE_MB,
            deletion_vectors: false,
        }
    }
}

impl MaintenanceFile {
    /// The validated policy.
    pub fn policy(&self) -> Result<Policy> {
        if self.small_files == 0 {
            return Err(Error::Invalid(
                "maintenance.small_files must be at least 1".into(),
            ));
        }
        if !(1..=1 << 20).contains(&self.target_file_size_mb) {
            return Err(Error::Invalid(
                "maintenance.target_file_size_mb must be within 1..=1048576".into(),
            ));
        }
        Ok(Policy {
            auto_optimize: self.auto_optimize,
            small_files: self.small_files,
            target_file_size: self.target_file_size_mb << 20,
            deletion_vectors: self.deletion_vectors,
        })
    }
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|source| Error::Parse {
            path: origin.to_owned(),
            source,
        })
    }
}

/// Validated settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lake: String,
    pub tables: Vec<&'static Table>,
    pub start_time: i64,
    pub storage: HashMap<String, String>,
    pub zendesk: ZendeskSettings,
    pub page_size: u32,
    pub commit_rows: usize,
    pub channel_pages: usize,
    pub maintenance: Policy,
}

#[derive(Debug, Clone)]
pub struct ZendeskSettings {
    /// Scheme, host and port every request goes to; pagination URLs elsewhere are refused.
    pub base_url: Url,
    pub auth: Auth,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub account_requests_per_minute: u32,
    pub incremental_requests_per_minute: u32,
    /// The window Zendesk's budgets are counted in: a minute (the `*_per_minute` numbers are per
    /// window). Not a pipeline key: only tests shorten it, together with the simulator's.
    pub rate_window: Duration,
}

/// Values given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub lake: Option<String>,
    pub tables: Option<Vec<String>>,
}

impl Settings {
    /// Resolve a pipeline file, command-line overrides and the environment (`env` looks a
    /// variable up; tests pass a map instead of the process environment).
    pub fn resolve(
        file: PipelineFile,
        overrides: Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let invalid = |msg: String| Error::Invalid(msg);
        let lake = overrides
            .lake
            .or(file.lake)
            .unwrap_or_else(|| "./lake".to_owned());
        let names = overrides.tables.or(file.tables).unwrap_or_else(|| {
            spec::tables()
                .iter()
                .filter(|t| t.by_default)
                .map(|t| t.name.clone())
                .collect()
        });
        let mut selected = Vec::new();
        for name in &names {
            let spec = spec::find(name.trim()).ok_or_else(|| {
                invalid(format!(
                    "unknown table {name:?}; known tables: {}",
                    spec::names().join(", ")
                ))
            })?;
            if !selected.iter().any(|s: &&Table| s.name == spec.name) {
                selected.push(spec);
            }
        }
        if selected.is_empty() {
            return Err(invalid("no tables to sync".into()));
        }
        if file.start_time < 0 {
            return Err(invalid("start_time must be unix seconds >= 0".into()));
        }
        let z = file.zendesk;
        let base_url = resolve_base_url(
            env("ZENDESK_BASE_URL").or(z.base_url),
            env("ZENDESK_SUBDOMAIN").or(z.subdomain),
        )?;
        let auth = resolve_auth(env)?;
        if z.max_attempts == 0 {
            return Err(invalid("zendesk.max_attempts must be at least 1".into()));
        }
        if z.account_requests_per_minute == 0 || z.incremental_requests_per_minute == 0 {
            return Err(invalid(
                "request budgets per minute must be at least 1".into(),
            ));
        }
        if z.timeout_secs == 0 {
            return Err(invalid("zendesk.timeout_secs must be at least 1".into()));
        }
        let sync = file.sync;
        if !(1..=1000).contains(&sync.page_size) {
            return Err(invalid("sync.page_size must be within 1..=1000".into()));
        }
        if sync.commit_rows == 0 || sync.channel_pages == 0 {
            return Err(invalid(
                "sync.commit_rows and sync.channel_pages must be at least 1".into(),
            ));
        }
        let maintenance = file.maintenance.policy()?;
        Ok(Settings {
            lake,
            tables: selected,
            start_time: file.start_time,
            storage: file.storage,
            zendesk: ZendeskSettings {
                base_url,
                auth,
                timeout: Duration::from_secs(z.timeout_secs),
                max_attempts: z.max_attempts,
                retry_base: Duration::from_millis(z.retry_base_ms),
                retry_max: Duration::from_secs(z.retry_max_secs),
                account_requests_per_minute: z.account_requests_per_minute,
                incremental_requests_per_minute: z.incremental_requests_per_minute,
                rate_window: Duration::from_secs(60),
            },
            page_size: sync.page_size,
            commit_rows: sync.commit_rows,
            channel_pages: sync.channel_pages,
            maintenance,
        })
    }
}

fn resolve_base_url(base_url: Option<String>, subdomain: Option<String>) -> Result<Url> {
    let text = match (base_url, subdomain) {
        (Some(base), _) => base,
        (None, Some(sub)) => {
            let valid = !sub.is_empty()
                && sub
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(Error::Invalid(format!(
                    "ZENDESK_SUBDOMAIN {sub:?} is invalid: use lowercase letters, digits and '-' only \
                     (the `acme` of acme.zendesk.com)"
                )));
            }
            format!("https://{sub}.zendesk.com")
        }
        (None, None) => {
            return Err(Error::Invalid(
                "set ZENDESK_SUBDOMAIN (or ZENDESK_BASE_URL, or zendesk.subdomain in the pipeline file)".into(),
            ))
        }
    };
    let url = Url::parse(&text)
        .map_err(|e| Error::Invalid(format!("ZENDESK_BASE_URL {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::Invalid(format!(
            "ZENDESK_BASE_URL {text:?} must be an http(s) URL with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Invalid(
            "ZENDESK_BASE_URL must not carry credentials; use ZENDESK_EMAIL and ZENDESK_API_TOKEN"
                .into(),
        ));
    }
    // Only the origin matters: endpoint paths are absolute.
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    Ok(origin)
}

/// A secret from the variable `name`, or from the file named by `name_FILE` (a mounted
/// Kubernetes or Docker secret), never both.
fn secret(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>> {
    let direct = env(name).filter(|v| !v.trim().is_empty());
    let file_var = format!("{name}_FILE");
    let Some(path) = env(&file_var).filter(|v| !v.trim().is_empty()) else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(Error::Invalid(format!(
            "set {name} or {file_var}, not both"
        )));
    }
    let text = std::fs::read_to_string(path.trim()).map_err(|e| {
        // The path is not secret; the content is never shown.
        Error::Invalid(format!("{file_var}: cannot read {}: {e}", path.trim()))
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Invalid(format!(
            "{file_var}: the file {} is empty",
            path.trim()
        )));
    }
    Ok(Some(text.to_owned()))
}

/// The webhook signing secret `listen` verifies deliveries with: `ZENDESK_WEBHOOK_SECRET`, or
/// the file `ZENDESK_WEBHOOK_SECRET_FILE` names.
pub fn webhook_secret(env: &dyn Fn(&str) -> Option<String>) -> Result<Secret> {
    match secret(env, "ZENDESK_WEBHOOK_SECRET")? {
        Some(secret) => Ok(Secret::new(secret.trim())),
        None => Err(Error::Invalid(
            "set ZENDESK_WEBHOOK_SECRET or ZENDESK_WEBHOOK_SECRET_FILE (the webhook's signing \
             secret; `zendesk-lake webhook register` writes it to a file)"
                .into(),
        )),
    }
}

fn resolve_auth(env: &dyn Fn(&str) -> Option<String>) -> Result<Auth> {
    let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(token) = secret(env, "ZENDESK_OAUTH_TOKEN")? {
        return Ok(Auth::OAuth {
            token: Secret::new(token.trim()),
        });
    }
    match (non_empty("ZENDESK_EMAIL"), secret(env, "ZENDESK_API_TOKEN")?) {
        (Some(email), Some(token)) => Ok(Auth::ApiToken {
            email: email.trim().to_owned(),
            token: Secret::new(token.trim()),
        }),
        _ => Err(Error::Invalid(
            "set ZENDESK_EMAIL and ZENDESK_API_TOKEN (or ZENDESK_API_TOKEN_FILE), or ZENDESK_OAUTH_TOKEN \
             (or ZENDESK_OAUTH_TOKEN_FILE)"
                .into(),
        )),
    }
}

/// The process environment, for [`Settings::resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn creds() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ZENDESK_EMAIL", "a@b.c"),
            ("ZENDESK_API_TOKEN", "tok-SECRET"),
        ]
    }

    #[test]
    fn subdomain_builds_base_url() {
        let mut vars = creds();
        vars.push(("ZENDESK_SUBDOMAIN", "acme-2"));
        let s =
            Settings::resolve(PipelineFile::default(), Overrides::default(), &env(&vars)).unwrap();
        assert_eq!(s.zendesk.base_url.as_str(), "https://acme-2.zendesk.com/");
        let default = spec::tables().iter().filter(|t| t.by_default).count();
        assert_eq!(s.tables.len(), default);
    }

    #[test]
    fn invalid_subdomain_is_rejected() {
        for bad in ["Acme", "acme.evil.com", "a/b", ""] {
            let mut vars = creds();
            vars.push(("ZENDESK_SUBDOMAIN", bad));
            let err = Settings::resolve(PipelineFile::default(), Overrides::default(), &env(&vars));
            assert!(err.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut vars = creds();
        vars.push(("ZENDESK_SUBDOMAIN", "acme"));
        let s =
            Settings::resolve(PipelineFile::default(), Overrides::default(), &env(&vars)).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("tok-SECRET"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn missing_credentials_are_reported() {
        let err = Settings::resolve(
            PipelineFile::default(),
            Overrides::default(),
            &env(&[("ZENDESK_SUBDOMAIN", "acme")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ZENDESK_API_TOKEN"), "{err}");
    }

    #[test]
    fn tokens_can_come_from_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file-SECRET\n").unwrap();
        let path = file.to_str().unwrap();
        let vars = [
            ("ZENDESK_SUBDOMAIN", "acme"),
            ("ZENDESK_EMAIL", "a@b.c"),
            ("ZENDESK_API_TOKEN_FILE", path),
        ];
        let s =
            Settings::resolve(PipelineFile::default(), Overrides::default(), &env(&vars)).unwrap();
        match &s.zendesk.auth {
            Auth::ApiToken { token, .. } => assert_eq!(token.expose(), "from-file-SECRET"),
            other => panic!("{other:?}"),
        }
        let both = [
            ("ZENDESK_SUBDOMAIN", "acme"),
            ("ZENDESK_OAUTH_TOKEN", "x"),
            ("ZENDESK_OAUTH_TOKEN_FILE", path),
        ];
        let err = Settings::resolve(PipelineFile::default(), Overrides::default(), &env(&both));
        assert!(err.unwrap_err().to_string().contains("not both"));
        let missing = [
            ("ZENDESK_SUBDOMAIN", "acme"),
            ("ZENDESK_OAUTH_TOKEN_FILE", "/nonexistent/token"),
        ];
        let err = Settings::resolve(
            PipelineFile::default(),
            Overrides::default(),
            &env(&missing),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/token") && err.contains("ZENDESK_OAUTH_TOKEN_FILE"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_tables_are_rejected() {
        assert!(PipelineFile::parse("lake = 'x'\nlakes = 'y'", "t").is_err());
        let mut vars = creds();
        vars.push(("ZENDESK_SUBDOMAIN", "acme"));
        let overrides = Overrides {
            tables: Some(vec!["tickets".into(), "nope".into()]),
            ..Default::default()
        };
        let err = Settings::resolve(PipelineFile::default(), overrides, &env(&vars)).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn tables_are_read_under_their_older_name_objects_too() {
        for key in ["tables", "objects"] {
            let file = PipelineFile::parse(&format!("{key} = ['users', 'groups']"), "t").unwrap();
            assert_eq!(
                file.tables,
                Some(vec!["users".to_owned(), "groups".to_owned()])
            );
        }
    }

    #[test]
    fn maintenance_defaults_and_limits() {
        let policy = PipelineFile::default().maintenance.policy().unwrap();
        assert_eq!(policy, Policy::default());
        assert!(policy.auto_optimize);
        assert_eq!(policy.target_file_size, 128 << 20);
        let off = PipelineFile::parse(
            "[maintenance]\nauto_optimize = false\nsmall_files = 8\ntarget_file_size_mb = 64",
            "t",
        )
        .unwrap();
        let policy = off.maintenance.policy().unwrap();
        assert!(!policy.auto_optimize);
        assert_eq!((policy.small_files, policy.target_file_size), (8, 64 << 20));
        for bad in ["small_files = 0", "target_file_size_mb = 0"] {
            let file = PipelineFile::parse(&format!("[maintenance]\n{bad}"), "t").unwrap();
            assert!(file.maintenance.policy().is_err(), "{bad}");
        }
        assert!(PipelineFile::parse("[maintenance]\nauto_compact = true", "t").is_err());
    }

    #[test]
    fn shipped_pipeline_files_parse() {
        for file in ["pipelines/demo.toml", "pipelines/production.example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            PipelineFile::load(&path).unwrap();
        }
    }
}
