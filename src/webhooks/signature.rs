//! The signature of a delivery: `X-Zendesk-Webhook-Signature` is
//! base64(HMAC-SHA256(signing secret, `X-Zendesk-Webhook-Signature-Timestamp` + raw body)),
//! as Zendesk's "Verifying webhook authenticity" documents. The comparison is constant-time
//! (the MAC's own), and a signed timestamp further than [`TOLERANCE`] from now, either way, is
//! refused as a replay.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-zendesk-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-zendesk-webhook-signature-timestamp";

/// How far from now a delivery's timestamp may be, either way.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a delivery is refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A signature header missing, not base64, or not the body's.
    #[error("bad or missing signature")]
    BadSignature,
    /// Signed, but at a time too far from now: a replay, or a clock far off.
    #[error("signature timestamp too far from now")]
    Stale,
}

/// Checks deliveries against one signing secret. Debug never shows the secret.
#[derive(Clone)]
pub struct Verifier {
    key: Hmac<Sha256>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(***)")
    }
}

impl Verifier {
    pub fn new(secret: &Secret) -> Verifier {
        // The signing secret is exposed here, as the MAC's key, and nowhere else.
        let key = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            // HMAC takes a key of any length.
            .expect("HMAC accepts keys of every length");
        Verifier { key }
    }

    /// Whether `body` was signed with the secret at `timestamp`, close enough to `now`.
    pub fn verify(
        &self,
        timestamp: Option<&[u8]>,
        signature: Option<&[u8]>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Rejected> {
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(Rejected::BadSignature);
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim_ascii())
            .map_err(|_| Rejected::BadSignature)?;
        let mut mac = self.key.clone();
        mac.update(timestamp);
        mac.update(body);
        mac.verify_slice(&signature)
            .map_err(|_| Rejected::BadSignature)?;
        let signed_at = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .ok_or(Rejected::Stale)?;
        let apart = (now - signed_at.with_timezone(&Utc)).abs();
        match apart.to_std() {
            Ok(apart) if apart <= TOLERANCE => Ok(()),
            _ => Err(Rejected::Stale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "dGhpcyBpcyBhIHNlY3JldA==";
    const AT: &str = "2026-12-07T10:00:00Z";
    const BODY: &[u8] = br#"{"type":"zen:event-type:user.created","id":"e-1"}"#;
    /// base64(HMAC-SHA256(SECRET, AT + BODY)), computed with Python's hmac module.
    const SIGNED: &str = "GlFdbURMxdu8sbVx6Zixfg5PjP6O1N/cubCo3VEB+FU=";
    /// The same over AT and an empty body.
    const SIGNED_EMPTY: &str = "lBkfnU6jwFY834zt6qxpiq4mA9x2wrem1ZanvIe15Ec=";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn verify(
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: &str,
    ) -> Result<(), Rejected> {
        Verifier::new(&Secret::new(SECRET)).verify(
            timestamp.map(str::as_bytes),
            signature.map(str::as_bytes),
            body,
            at(now),
        )
    }

    #[test]
    fn a_delivery_signed_with_the_secret_within_five_minutes_is_genuine() {
        assert_eq!(verify(Some(AT), Some(SIGNED), BODY, AT), Ok(()));
        assert_eq!(
            verify(Some(AT), Some(SIGNED), BODY, "2026-12-07T10:04:59Z"),
            Ok(())
        );
        assert_eq!(
            verify(Some(AT), Some(SIGNED), BODY, "2026-12-07T09:55:00Z"),
            Ok(())
        );
        assert_eq!(verify(Some(AT), Some(SIGNED_EMPTY), b"", AT), Ok(()));
    }

    #[test]
    fn a_wrong_or_missing_signature_is_refused() {
        let other_body = br#"{"type":"zen:event-type:user.created","id":"e-2"}"#;
        for (timestamp, signature, body) in [
            (Some(AT), Some(SIGNED), &other_body[..]),
            (Some("2026-12-07T10:00:01Z"), Some(SIGNED), BODY),
            (Some(AT), Some(SIGNED_EMPTY), BODY),
            (Some(AT), Some("not base64!"), BODY),
            (Some(AT), Some(""), BODY),
            (None, Some(SIGNED), BODY),
            (Some(AT), None, BODY),
            (None, None, b""),
        ] {
            assert_eq!(
                verify(timestamp, signature, body, AT),
                Err(Rejected::BadSignature),
                "{timestamp:?} {signature:?}"
            );
        }
        let other = Verifier::new(&Secret::new("another secret"));
        let refused = other.verify(Some(AT.as_bytes()), Some(SIGNED.as_bytes()), BODY, at(AT));
        assert_eq!(refused, Err(Rejected::BadSignature));
    }

    #[test]
    fn a_genuine_signature_from_more_than_five_minutes_away_is_a_replay() {
        for now in [
            "2026-12-07T10:05:01Z",
            "2026-12-07T09:54:59Z",
            "2026-12-08T10:00:00Z",
        ] {
            assert_eq!(
                verify(Some(AT), Some(SIGNED), BODY, now),
                Err(Rejected::Stale),
                "{now}"
            );
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let shown = format!("{:?}", Verifier::new(&Secret::new(SECRET)));
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
