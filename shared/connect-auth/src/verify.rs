//! Verifying incoming HS256 tokens: webhooks, `enabled`/`disabled`, context JWTs (docs/protocol.md §3).

use std::sync::LazyLock;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::claims::{Claims, RawClaims};
use crate::clock::{Clock, SystemClock};
use crate::dangerous::UnverifiedClaims;
use crate::error::AuthError;
use crate::hs256;
use crate::qsh::{CONTEXT_QSH, RequestParts};

/// The clock skew tolerated on `exp`, `nbf` and `iat`, as Atlassian's Java reader allows.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 30;

/// The longest lifetime (`exp - iat`) the app's own API accepts on a context JWT: 15 minutes.
/// Confluence's context tokens are short-lived; a leaked one must not stay useful for long. See
/// [`Hs256Verifier::max_lifetime`].
pub const CONTEXT_TOKEN_MAX_LIFETIME_SECONDS: i64 = 15 * 60;

/// How a route checks the `qsh` claim. There is deliberately no "skip".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QshMode {
    /// The qsh must equal the hash of the request as received (lifecycle, webhooks, iframe loads).
    Computed,
    /// The qsh must be the literal `context-qsh` (the app's own API called with `AP.context.getToken()`).
    /// Never use this on lifecycle or webhook routes (CVE-2021-26073).
    Context,
}

/// A verified request: the caller's tenant and the token's claims.
#[derive(Debug)]
pub struct Verified<T> {
    /// The tenant whose secret verified the token.
    pub tenant: T,
    /// The verified claims; `claims.iss` is the tenant's clientKey.
    pub claims: Claims,
}

/// Finds a tenant and its shared secret by clientKey. Implemented by the caller over its store.
#[async_trait]
pub trait TenantSecrets: Send + Sync {
    /// What the caller wants back once the token is verified (its tenant record).
    type Tenant: Send;

    /// The tenant for this clientKey, or `None` when there is none that may sign requests (unknown,
    /// uninstalled). A failing store is [`AuthError::LookupUnavailable`].
    async fn find_tenant(&self, client_key: &str) -> Result<Option<Self::Tenant>, AuthError>;

    /// The tenant's shared secret.
    fn shared_secret<'t>(&self, tenant: &'t Self::Tenant) -> &'t SecretString;

    /// The tenant read again, for a token that [`TenantSecrets::find_tenant`]'s secret did not
    /// verify: a lookup that caches tenants returns a fresher read here (the secret may have been
    /// rotated since), or `None` when it has nothing fresher to offer. A lookup that always reads
    /// the store has nothing to add: the default is `None`.
    async fn find_tenant_again(&self, client_key: &str) -> Result<Option<Self::Tenant>, AuthError> {
        let _ = client_key;
        Ok(None)
    }
}

/// Checks HS256 tokens signed with a tenant's shared secret.
#[derive(Debug, Clone)]
pub struct Hs256Verifier<C = SystemClock> {
    leeway_seconds: i64,
    max_lifetime_seconds: Option<i64>,
    clock: C,
}

impl Default for Hs256Verifier<SystemClock> {
    fn default() -> Self {
        Self::with_clock(SystemClock)
    }
}

/// jsonwebtoken checks the signature and the algorithm only; the time and qsh rules are ours, with
/// an injected clock.
pub(crate) fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

pub(crate) fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm {
            expected: "the route's algorithm",
        },
        ErrorKind::Base64(_) => AuthError::Malformed("a segment is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed("a segment is not JSON"),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::KeyUnavailable("the public key is not a usable RSA key".into())
        }
        _ => AuthError::Malformed("token could not be decoded"),
    }
}

/// `exp` and `iat` are required; `nbf` is honoured; all with the leeway.
pub(crate) fn check_times(claims: &Claims, now: i64, leeway: i64) -> Result<(), AuthError> {
    if now >= claims.exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    let earliest = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if earliest > now.saturating_add(leeway) {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

/// With a bound on the lifetime: `exp - iat` at most `max`, and `iat` no more than `max + leeway`
/// in the past. Checked after [`check_times`], so an expired token is still "expired".
pub(crate) fn check_lifetime(
    claims: &Claims,
    now: i64,
    leeway: i64,
    max: i64,
) -> Result<(), AuthError> {
    if claims.iat < now.saturating_sub(max.saturating_add(leeway)) {
        return Err(AuthError::IssuedTooLongAgo);
    }
    if claims.exp.saturating_sub(claims.iat) > max {
        return Err(AuthError::LifetimeTooLong);
    }
    Ok(())
}

/// The key an unknown issuer's token is checked with, only so that refusing it costs what refusing
/// a bad signature costs. Nothing is ever accepted with it.
fn decoy_secret() -> &'static SecretString {
    static DECOY: LazyLock<SecretString> =
        LazyLock::new(|| SecretString::from("understudy-decoy-key-for-unknown-issuers-0000"));
    &DECOY
}

/// Requires the qsh claim (a Connect rule, so it is checked here rather than in the claims every
/// token shares) and compares it with what the route requires, in constant time.
pub(crate) fn check_qsh(
    claimed: Option<&str>,
    mode: QshMode,
    request: &RequestParts<'_>,
) -> Result<(), AuthError> {
    let claimed = claimed.ok_or(AuthError::MissingQsh)?;
    let matches = |expected: &[u8]| bool::from(claimed.as_bytes().ct_eq(expected));
    match mode {
        QshMode::Context if matches(CONTEXT_QSH.as_bytes()) => Ok(()),
        QshMode::Context => Err(AuthError::QshMismatch),
        QshMode::Computed if claimed == CONTEXT_QSH => Err(AuthError::ContextQshNotAllowed),
        // The request's qsh in lower-case hex: an upper-case claim does not match.
        QshMode::Computed if matches(&request.qsh_hex()) => Ok(()),
        QshMode::Computed => Err(AuthError::QshMismatch),
    }
}

impl<C: Clock> Hs256Verifier<C> {
    /// A verifier reading time from `clock`, with the default leeway.
    pub fn with_clock(clock: C) -> Self {
        Self {
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            max_lifetime_seconds: None,
            clock,
        }
    }

    /// The same verifier with another clock-skew leeway.
    pub fn leeway(mut self, seconds: i64) -> Self {
        self.leeway_seconds = seconds.max(0);
        self
    }

    /// The same verifier, refusing tokens whose lifetime (`exp - iat`) is longer than `seconds`
    /// ([`AuthError::LifetimeTooLong`]) or whose `iat` is more than `seconds` plus the leeway in the
    /// past ([`AuthError::IssuedTooLongAgo`]). For the app's API, which takes context JWTs
    /// ([`CONTEXT_TOKEN_MAX_LIFETIME_SECONDS`]); lifecycle and webhook routes keep no bound.
    pub fn max_lifetime(mut self, seconds: i64) -> Self {
        self.max_lifetime_seconds = Some(seconds.max(0));
        self
    }

    /// Verifies `token` against `secret` and `request`: algorithm HS256 only, signature, required
    /// claims, times (and the lifetime bound, when set), then qsh per `mode`.
    pub fn verify(
        &self,
        token: &str,
        secret: &SecretString,
        request: &RequestParts<'_>,
        mode: QshMode,
    ) -> Result<Claims, AuthError> {
        let raw = hs256::verify_signature(token, secret.expose_secret().as_bytes())?;
        self.check_claims(raw, request, mode)
    }

    /// The claims rules of [`Hs256Verifier::verify`], for claims whose signature holds.
    fn check_claims(
        &self,
        raw: RawClaims,
        request: &RequestParts<'_>,
        mode: QshMode,
    ) -> Result<Claims, AuthError> {
        let claims = raw.into_claims()?;
        let now = self.clock.now_unix();
        check_times(&claims, now, self.leeway_seconds)?;
        if let Some(max) = self.max_lifetime_seconds {
            check_lifetime(&claims, now, self.leeway_seconds, max)?;
        }
        check_qsh(claims.qsh.as_deref(), mode, request)?;
        Ok(claims)
    }

    /// Verifies a request from a tenant: reads the issuer (unverified) only to find the tenant's
    /// secret, then verifies everything with that secret.
    ///
    /// A token the tenant's secret does not verify is tried once more with the tenant
    /// [`TenantSecrets::find_tenant_again`] gives (a cache's fresher read).
    ///
    /// An unknown issuer ([`AuthError::UnknownIssuer`]) and a bad signature
    /// ([`AuthError::BadSignature`]) read the same to the caller, and an unknown issuer's token is
    /// still put through an HMAC (with a decoy key, result discarded) so that the verifier's own
    /// work does not tell them apart either. The tenant lookup's own timing is the store's.
    pub async fn verify_request<L: TenantSecrets>(
        &self,
        lookup: &L,
        token: &str,
        request: &RequestParts<'_>,
        mode: QshMode,
    ) -> Result<Verified<L::Tenant>, AuthError> {
        // Fail cheaply on the wrong algorithm before touching the store.
        hs256::require_hs256(token)?;
        // The claims are decoded and read once: here, for the issuer; checked below, only once the
        // signature holds, with the errors `verify` gives for them.
        let unverified = UnverifiedClaims::read(token)?;
        let issuer = unverified.issuer();
        let signature_holds =
            |tenant: &L::Tenant| hs256::check_signature(token, secret_bytes(lookup, tenant));
        let Some(mut tenant) = lookup.find_tenant(issuer).await? else {
            let decoy = decoy_secret().expose_secret().as_bytes();
            std::hint::black_box(hs256::check_signature(token, decoy)).ok();
            return Err(AuthError::UnknownIssuer);
        };
        match signature_holds(&tenant) {
            Ok(()) => {}
            // Only a bad signature can mean "the secret changed": anything else fails the same
            // way with any secret.
            Err(AuthError::BadSignature) => {
                let Some(again) = lookup.find_tenant_again(issuer).await? else {
                    return Err(AuthError::BadSignature);
                };
                signature_holds(&again)?;
                tenant = again;
            }
            Err(err) => return Err(err),
        }
        let claims = self.check_claims(unverified.into_raw()?, request, mode)?;
        Ok(Verified { tenant, claims })
    }
}

fn secret_bytes<'t, L: TenantSecrets>(lookup: &L, tenant: &'t L::Tenant) -> &'t [u8] {
    lookup.shared_secret(tenant).expose_secret().as_bytes()
}
