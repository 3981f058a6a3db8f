//! Verifying requests from Slack: `X-Slack-Signature` is `v0=` and the hex
//! HMAC-SHA256, keyed with the app's signing secret, of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}`.
//!
//! A request is refused when no secret is configured, when its timestamp is
//! more than five minutes from now (either way), when the signature does not
//! match (compared in constant time), or when the same signature was already
//! accepted within those five minutes (a replay: a signature older than that
//! is stale anyway, so the memory of seen signatures stays small).

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// How far a request's timestamp may be from now, seconds.
pub const TOLERANCE_SECS: i64 = 300;
/// Most signatures remembered for replay detection.
const MAX_SEEN: usize = 100_000;

/// Why a request was refused. The texts are safe to show the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `slack.signing_secret` is not set.
    #[error("slack interactions are not configured")]
    NotConfigured,
    /// A header is missing or malformed.
    #[error("missing or malformed Slack signature headers")]
    Malformed,
    /// The timestamp is too far from now.
    #[error("stale request")]
    Stale,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// This exact request was already accepted.
    #[error("replayed request")]
    Replayed,
}

/// `v0=` plus the hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let mut out = String::from("v0=");
    for b in mac.finalize().into_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks Slack's signature and remembers accepted ones.
pub struct SlackVerifier {
    secret: Option<SecretString>,
    // A std Mutex: held for a map lookup and insert, never across an await.
    seen: Mutex<HashMap<Vec<u8>, i64>>,
}

impl std::fmt::Debug for SlackVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackVerifier")
            .field("configured", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl SlackVerifier {
    /// A verifier with `secret`; `None` refuses everything.
    pub fn new(secret: Option<SecretString>) -> SlackVerifier {
        SlackVerifier {
            secret,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a signing secret is configured.
    pub fn configured(&self) -> bool {
        self.secret.is_some()
    }

    /// Verifies one request at `now` (unix seconds).
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let secret = self.secret.as_ref().ok_or(VerifyError::NotConfigured)?;
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(VerifyError::Malformed);
        };
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::Malformed)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(VerifyError::Stale);
        }
        let given = signature
            .strip_prefix("v0=")
            .and_then(hex)
            .ok_or(VerifyError::Malformed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map_err(|_| VerifyError::NotConfigured)?;
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| VerifyError::BadSignature)?;

        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| (now - *at).abs() <= TOLERANCE_SECS);
        if seen.contains_key(&given) {
            return Err(VerifyError::Replayed);
        }
        if seen.len() >= MAX_SEEN {
            // A flood of validly signed requests: keep the newest half.
            let mut ats: Vec<i64> = seen.values().copied().collect();
            ats.sort_unstable();
            let cut = ats[ats.len() / 2];
            seen.retain(|_, at| *at >= cut);
        }
        seen.insert(given, ts);
        Ok(())
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's worked example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn verifier() -> SlackVerifier {
        SlackVerifier::new(Some(SecretString::from(SECRET.to_string())))
    }

    #[test]
    fn slack_documented_example() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        let now = 1_531_420_618 + 60;
        let v = verifier();
        assert_eq!(v.verify(Some(TS), Some(SIG), BODY.as_bytes(), now), Ok(()));
        assert_eq!(
            v.verify(Some(TS), Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::Replayed)
        );
    }

    #[test]
    fn refuses_tampered_stale_and_unconfigured() {
        let now = 1_531_420_618;
        let v = verifier();
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            v.verify(Some(TS), Some(SIG), tampered.as_bytes(), now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v.verify(
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                now + TOLERANCE_SECS + 1
            ),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            v.verify(Some(TS), Some("v0=zz"), BODY.as_bytes(), now),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            v.verify(None, Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            SlackVerifier::new(None).verify(Some(TS), Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::NotConfigured)
        );
    }
}
