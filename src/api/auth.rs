//! Bearer-token authentication and scopes.
//!
//! A route states the scope it needs in its signature, `Authorized<Read>`, so it
//! cannot forget to check; the extractor runs before the body is read. The
//! presented token is compared with every configured secret in constant time
//! ([`subtle`]), all of them every time, so timing tells nothing about which
//! secret matched or how many leading bytes were right (only, as with any
//! comparison, whether the lengths differ).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::{Choice, ConstantTimeEq};

use super::{ApiError, AppState};
use crate::config::{ApiToken, Scope};

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    tokens: Arc<[ApiToken]>,
}

/// Who is calling: the matched token's name (for audit) and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name; never derived from the secret.
    pub name: String,
    /// Every scope of the tokens whose secret matched.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Whether the caller may use a route needing `required`.
    pub fn allows(&self, required: Scope) -> bool {
        self.scopes.iter().any(|s| s.allows(required))
    }
}

/// Shortest API token secret accepted without a warning: 16 characters is 96
/// bits as base64, out of reach of online guessing.
pub const MIN_TOKEN_CHARS: usize = 16;

impl TokenSet {
    /// The tokens of the settings. Each secret shorter than
    /// [`MIN_TOKEN_CHARS`] is named (by position, never by secret) in a warning
    /// at start: a short token is guessable, and refusing it outright would
    /// lock out deployments that have one.
    pub fn new(tokens: Vec<ApiToken>) -> TokenSet {
        for (i, t) in tokens.iter().enumerate() {
            let chars = t.secret.expose_secret().chars().count();
            if chars < MIN_TOKEN_CHARS {
                tracing::warn!(
                    token = i + 1,
                    name = %t.name,
                    chars,
                    min = MIN_TOKEN_CHARS,
                    "WEAK API TOKEN: this secret is short enough to guess; use {MIN_TOKEN_CHARS} or more random characters"
                );
            }
        }
        TokenSet {
            tokens: tokens.into(),
        }
    }

    /// Whether no token is configured (every protected route answers 401).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller whose secret is `presented`, if any.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let presented = presented.as_bytes();
        // Compare against every token, no early exit.
        let matches: Vec<Choice> = self
            .tokens
            .iter()
            .map(|t| t.secret.expose_secret().as_bytes().ct_eq(presented))
            .collect();
        let mut caller: Option<Caller> = None;
        for (t, m) in self.tokens.iter().zip(matches) {
            if bool::from(m) {
                let c = caller.get_or_insert_with(|| Caller {
                    name: t.name.clone(),
                    scopes: Vec::new(),
                });
                c.scopes.push(t.scope);
            }
        }
        caller
    }

    /// Authenticates an `Authorization` header value and checks the scope.
    pub fn authorize(&self, header: Option<&[u8]>, required: Scope) -> Result<Caller, ApiError> {
        if self.is_empty() {
            return Err(ApiError::Unauthorized(
                "no API tokens are configured on this server (FAULTLINE_API_TOKENS)",
            ));
        }
        let header = header.ok_or(ApiError::Unauthorized(
            "missing `Authorization: Bearer TOKEN` header",
        ))?;
        let token =
            std::str::from_utf8(header)
                .ok()
                .and_then(bearer)
                .ok_or(ApiError::Unauthorized(
                    "expected `Authorization: Bearer TOKEN`",
                ))?;
        let caller = self
            .authenticate(token)
            .ok_or(ApiError::Unauthorized("invalid token"))?;
        if caller.allows(required) {
            Ok(caller)
        } else {
            Err(ApiError::Forbidden(required))
        }
    }
}

/// The token of `Bearer TOKEN` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A scope a route requires, as a type.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// Requires `read` (or `write`).
#[derive(Debug)]
pub struct Read;
/// Requires `write`.
#[derive(Debug)]
pub struct Write;
/// Requires `ingest`.
#[derive(Debug)]
pub struct Ingest;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Write {
    const SCOPE: Scope = Scope::Write;
}
impl RequiredScope for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}

/// An authenticated caller holding scope `S`; rejects with 401 or 403.
#[derive(Debug)]
pub struct Authorized<S: RequiredScope> {
    /// Who.
    pub caller: Caller,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        let caller = state.tokens.authorize(header, S::SCOPE)?;
        tracing::debug!(token = %caller.name, scope = S::SCOPE.as_str(), "api: authorized");
        Ok(Authorized {
            caller,
            _scope: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> TokenSet {
        let t = |name: &str, secret: &str, scope| ApiToken {
            name: name.into(),
            secret: secret.to_string().into(),
            scope,
        };
        TokenSet::new(vec![
            t("r", "read-secret", Scope::Read),
            t("w", "write-secret", Scope::Write),
            t("i", "shared", Scope::Ingest),
            t("i2", "shared", Scope::Read),
        ])
    }

    #[test]
    fn checks_tokens_and_scopes() {
        let s = set();
        let ok = |h: &str, scope| s.authorize(Some(h.as_bytes()), scope);
        assert_eq!(ok("Bearer read-secret", Scope::Read).unwrap().name, "r");
        assert_eq!(ok("bearer  write-secret ", Scope::Read).unwrap().name, "w");
        assert!(matches!(
            ok("Bearer read-secret", Scope::Write),
            Err(ApiError::Forbidden(Scope::Write))
        ));
        assert!(matches!(
            ok("Bearer read-secret", Scope::Ingest),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            ok("Bearer read-secre", Scope::Read),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            ok("Basic read-secret", Scope::Read),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            ok("Bearer ", Scope::Read),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            s.authorize(None, Scope::Read),
            Err(ApiError::Unauthorized(_))
        ));
        // One secret on two tokens holds both scopes.
        let c = ok("Bearer shared", Scope::Read).unwrap();
        assert_eq!(c.name, "i");
        assert!(c.allows(Scope::Ingest) && c.allows(Scope::Read));
    }

    #[test]
    fn no_tokens_refuses_everything() {
        let s = TokenSet::default();
        assert!(matches!(
            s.authorize(Some(b"Bearer x"), Scope::Read),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
