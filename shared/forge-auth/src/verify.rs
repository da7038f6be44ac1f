//! The FIT verifier.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_auth::{Clock, SystemClock};
use jsonwebtoken::{Algorithm, crypto};
use serde_json::{Map, Value};

use crate::claims::{App, Context, InvocationClaims, RawApp, RawPrincipal};
use crate::error::FitError;
use crate::jwks::{JwksSource, KeyCache, KeyLookup};

/// The `iss` of every FIT.
pub const FIT_ISSUER: &str = "forge/invocation-token";

/// The clock leeway for `exp`, `iat` and `nbf`, the same as Connect's.
pub const DEFAULT_LEEWAY_SECONDS: i64 = connect_auth::DEFAULT_LEEWAY_SECONDS;

/// The longest FIT accepted (a FIT is a few KiB).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

/// The longest `kid` accepted.
pub const MAX_KID_LEN: usize = 256;

/// The app's own id, an ARI `ari:cloud:ecosystem::app/<uuid>`: the only audience accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppId(String);

/// A configured app id that is not an app ARI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FORGE_APP_ID must be an app ARI `ari:cloud:ecosystem::app/<uuid>`")]
pub struct InvalidAppId;

impl AppId {
    /// The ARI prefix of every app id.
    pub const PREFIX: &'static str = "ari:cloud:ecosystem::app/";

    /// Validates a configured app id.
    pub fn parse(value: &str) -> Result<Self, InvalidAppId> {
        let id = value.strip_prefix(Self::PREFIX).ok_or(InvalidAppId)?;
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidAppId)
        }
    }

    /// The ARI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Verifies `Authorization: Bearer <FIT>` (docs: ../shared/reference/forge-remote.md §2).
pub struct FitVerifier<S, C = SystemClock> {
    app_id: AppId,
    clock: C,
    leeway_seconds: i64,
    keys: KeyCache<S, C>,
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for FitVerifier<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FitVerifier")
            .field("app_id", &self.app_id)
            .field("clock", &self.clock)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("keys", &self.keys)
            .finish()
    }
}

impl<S: JwksSource> FitVerifier<S> {
    /// A verifier for tokens addressed to `app_id`, with keys from `source`, on the system clock.
    pub fn new(app_id: AppId, source: S) -> Self {
        Self::with_clock(app_id, source, SystemClock)
    }
}

impl<S: JwksSource, C: Clock + Clone> FitVerifier<S, C> {
    /// The same, reading time from `clock`: the token's times and the JWKS refresh interval.
    pub fn with_clock(app_id: AppId, source: S, clock: C) -> Self {
        Self {
            app_id,
            keys: KeyCache::new(
                source,
                clock.clone(),
                KeyCache::<S, C>::DEFAULT_CAPACITY,
                KeyCache::<S, C>::DEFAULT_REFRESH_INTERVAL_SECONDS,
            ),
            clock,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }
    }

    /// Another leeway (seconds, at least 0).
    pub fn leeway(mut self, seconds: i64) -> Self {
        self.leeway_seconds = seconds.max(0);
        self
    }

    /// Other key cache bounds: at most `capacity` keys (at least one), a fetch on an unknown kid at
    /// most once per `refresh_interval_seconds`. Forgets the keys cached so far.
    pub fn key_cache(self, capacity: usize, refresh_interval_seconds: i64) -> Self {
        let source = self.keys.into_source();
        Self {
            keys: KeyCache::new(
                source,
                self.clock.clone(),
                capacity,
                refresh_interval_seconds,
            ),
            ..self
        }
    }
}

impl<S: JwksSource, C: Clock> FitVerifier<S, C> {
    /// The app id tokens must be addressed to.
    pub fn app_id(&self) -> &AppId {
        &self.app_id
    }

    /// How many keys are cached now.
    pub fn cached_keys(&self) -> usize {
        self.keys.cached()
    }

    /// Verifies the `Authorization` header's FIT and returns its claims.
    pub async fn verify(
        &self,
        authorization_header: Option<&str>,
    ) -> Result<InvocationClaims, FitError> {
        let token = bearer_token(authorization_header)?;
        let (header_b64, rest) = token.split_once('.').ok_or(FitError::Malformed("token"))?;
        let (claims_b64, signature_b64) =
            rest.split_once('.').ok_or(FitError::Malformed("token"))?;
        if signature_b64.contains('.') || header_b64.is_empty() || claims_b64.is_empty() {
            return Err(FitError::Malformed("token"));
        }

        // The algorithm is checked before any key is chosen.
        let header = json_object(header_b64).ok_or(FitError::Malformed("header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(FitError::WrongAlgorithm);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|kid| {
                !kid.is_empty()
                    && kid.len() <= MAX_KID_LEN
                    && kid.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or(FitError::MissingKid)?;
        let key = self.keys.key(kid).await.map_err(|e| match e {
            KeyLookup::Unknown => FitError::UnknownKid,
            KeyLookup::Unavailable => FitError::JwksUnavailable,
        })?;
        let signed_len = header_b64.len() + 1 + claims_b64.len();
        let message = token
            .get(..signed_len)
            .ok_or(FitError::Malformed("token"))?;
        match crypto::verify(signature_b64, message.as_bytes(), &key, Algorithm::RS256) {
            Ok(true) => {}
            _ => return Err(FitError::BadSignature),
        }

        let claims = json_object(claims_b64).ok_or(FitError::Malformed("claims"))?;
        self.check_claims(claims)
    }

    fn check_claims(&self, mut claims: Map<String, Value>) -> Result<InvocationClaims, FitError> {
        match claims.get("iss") {
            None => return Err(FitError::MissingClaim("iss")),
            Some(Value::String(iss)) if iss == FIT_ISSUER => {}
            Some(_) => return Err(FitError::WrongIssuer),
        }
        let audience_ok = match claims.get("aud") {
            None => return Err(FitError::MissingClaim("aud")),
            Some(Value::String(aud)) => aud == self.app_id.as_str(),
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|aud| aud.as_str() == Some(self.app_id.as_str())),
            Some(_) => false,
        };
        if !audience_ok {
            return Err(FitError::WrongAudience);
        }

        let exp = numeric_date(&claims, "exp")?.ok_or(FitError::MissingClaim("exp"))?;
        let iat = numeric_date(&claims, "iat")?.ok_or(FitError::MissingClaim("iat"))?;
        let nbf = numeric_date(&claims, "nbf")?;
        let now = self.clock.now_unix();
        if exp.saturating_add(self.leeway_seconds) < now {
            return Err(FitError::Expired);
        }
        let latest = now.saturating_add(self.leeway_seconds);
        if iat > latest || nbf.is_some_and(|nbf| nbf > latest) {
            return Err(FitError::NotYetValid);
        }
        let jti = match claims.remove("jti") {
            Some(Value::String(jti)) if !jti.is_empty() => jti,
            _ => return Err(FitError::MissingClaim("jti")),
        };

        let raw_app: RawApp = match claims.remove("app") {
            Some(app @ Value::Object(_)) => {
                serde_json::from_value(app).map_err(|_| FitError::MissingClaim("app"))?
            }
            _ => return Err(FitError::MissingClaim("app")),
        };
        let app = App {
            id: nonempty(raw_app.id).ok_or(FitError::MissingClaim("app.id"))?,
            installation_id: nonempty(raw_app.installation_id)
                .ok_or(FitError::MissingClaim("app.installationId"))?,
            api_base_url: nonempty(raw_app.api_base_url)
                .ok_or(FitError::MissingClaim("app.apiBaseUrl"))?,
            contexts: raw_app
                .installation
                .map(|installation| installation.contexts)
                .unwrap_or_default(),
            environment: raw_app.environment,
            module: raw_app.module,
        };
        let principal = match claims.remove("principal") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<RawPrincipal>(value)
                    .map_err(|_| FitError::MissingClaim("principal"))?
                    .account_id(),
            ),
        };
        let context = match claims.remove("context") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<Context>(value)
                    .map_err(|_| FitError::MissingClaim("context"))?,
            ),
        };
        Ok(InvocationClaims {
            app,
            principal,
            context,
            jti,
            iat,
            exp,
        })
    }
}

/// The token of `Bearer <token>`, exactly: one space, no other whitespace, a bounded length.
fn bearer_token(header: Option<&str>) -> Result<&str, FitError> {
    let header = header.ok_or(FitError::MissingHeader)?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or(FitError::GarbledHeader)?;
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(token)
    } else {
        Err(FitError::GarbledHeader)
    }
}

/// A base64url segment holding a JSON object.
fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate claim: absent is `None`; present but not a number is refused by name.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, FitError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    if let Some(n) = value.as_i64() {
        return Ok(Some(n));
    }
    match value.as_f64() {
        #[allow(clippy::cast_possible_truncation)]
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
        _ => Err(FitError::MissingClaim(name)),
    }
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}
