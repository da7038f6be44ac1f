//! Confluence's side of authentication (Connect JWTs from apps, bearer tokens from its OAuth server),
//! the OAuth server's JWT-bearer grant, and the tokens the simulator signs for apps.
//!
//! The checks are written here from the protocol (docs/protocol.md §3, §5, §6) with
//! `jsonwebtoken` for the signature only, not with the app's own verifier, so that a mistake in the
//! app's auth code is not repeated here. Only the canonical request (qsh) comes from connect-auth,
//! whose canonicaliser is itself checked against Atlassian's vectors and atlassian-jwt; the interop
//! suite checks this module against atlassian-jwt too.

use std::collections::HashMap;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_auth::{CONTEXT_QSH, RequestParts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};

use crate::forge::ForgeTokenKind;
use crate::model::{AccountType, EditVia, Subject};
use crate::state::{IssuedToken, State, TokenExchange, is_product_scope, scope_granted};

/// Who a request to Confluence runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The app's own app user (Connect JWT).
    App { app_key: String, account_id: String },
    /// A user, through an app's impersonation token.
    User {
        app_key: String,
        account_id: String,
        scopes: Vec<String>,
    },
    /// Through Forge's API gateway with a Forge token: the Forge app user (system token) or a
    /// user (user or offline token), through the Forge app `app_id`.
    Forge {
        app_id: String,
        account_id: String,
        kind: ForgeTokenKind,
    },
}

impl Caller {
    pub fn account_id(&self) -> &str {
        match self {
            Self::App { account_id, .. }
            | Self::User { account_id, .. }
            | Self::Forge { account_id, .. } => account_id,
        }
    }

    /// The Connect app's key, or the Forge app's id.
    pub fn app_key(&self) -> &str {
        match self {
            Self::App { app_key, .. } | Self::User { app_key, .. } => app_key,
            Self::Forge { app_id, .. } => app_id,
        }
    }

    /// True for calls made with a token the Forge app holds (their events are `selfGenerated`).
    pub fn is_forge(&self) -> bool {
        matches!(self, Self::Forge { .. })
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            account_id: self.account_id(),
            via_app: Some(self.app_key()),
        }
    }

    /// How an edit by this caller reached the page. A Forge caller is recorded with the Forge
    /// app's id as `app_key`: the system token as the app user, user and offline tokens as
    /// impersonation.
    pub fn via(&self) -> EditVia {
        match self {
            Self::App { app_key, .. }
            | Self::Forge {
                app_id: app_key,
                kind: ForgeTokenKind::System,
                ..
            } => EditVia::AppUser {
                app_key: app_key.clone(),
            },
            Self::User { app_key, .. }
            | Self::Forge {
                app_id: app_key, ..
            } => EditVia::Impersonation {
                app_key: app_key.clone(),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::App { app_key, .. } => format!("app:{app_key}"),
            Self::User {
                app_key,
                account_id,
                ..
            } => format!("user:{account_id} via {app_key}"),
            Self::Forge {
                app_id,
                account_id,
                kind,
            } => format!("forge-{}:{account_id} via {app_id}", kind.as_str()),
        }
    }

    /// Does the caller hold `scope`? The app's descriptor scopes, or the token's scopes.
    pub fn has_scope(&self, state: &State, scope: &str) -> bool {
        match self {
            Self::App { app_key, .. } => state
                .installations
                .get(app_key)
                .is_some_and(|i| i.has_scope(scope)),
            Self::User { scopes, .. } => scope_granted(scopes, scope),
            // The Forge manifest is not simulated: its tokens may read and write content.
            Self::Forge { .. } => matches!(scope, "READ" | "WRITE"),
        }
    }
}

/// How a request to Confluence was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

fn refused(reason: impl Into<String>) -> Refused {
    Refused(reason.into())
}

/// Decodes a JWT segment to JSON without verifying anything.
fn peek_segment(token: &str, index: usize) -> Option<Value> {
    let segment = token.split('.').nth(index)?;
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Verifies an HS256 signature and returns the claims; nothing else is checked.
pub(crate) fn hs256_claims(token: &str, secret: &str) -> Option<Value> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret.as_bytes()).ok()?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

fn header_alg(token: &str) -> Option<String> {
    peek_segment(token, 0)?
        .get("alg")?
        .as_str()
        .map(str::to_owned)
}

/// `exp` and `iat` required, `nbf` honoured, all with the leeway.
fn check_times(claims: &Value, now: i64, leeway: i64) -> Result<(), Refused> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| refused("JWT has no numeric exp"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| refused("JWT has no numeric iat"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(refused("JWT expired"));
    }
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(iat);
    if iat.max(nbf) > now.saturating_add(leeway) {
        return Err(refused("JWT not yet valid"));
    }
    Ok(())
}

/// The request as Confluence sees it, for the qsh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
}

/// Authenticates a request to `/wiki/...`.
pub(crate) fn authenticate(
    state: &State,
    request: Incoming<'_>,
    now: i64,
    leeway: i64,
    require_aud: bool,
) -> Result<Caller, Refused> {
    let authorization = match request.headers.get("authorization") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| refused("Authorization header is not text"))?,
        ),
        None => None,
    };
    let query_jwt = url::form_urlencoded::parse(request.raw_query.as_bytes())
        .find(|(k, _)| k == "jwt")
        .map(|(_, v)| v.into_owned());
    match (authorization, query_jwt) {
        (Some(auth), _) if auth.starts_with("Bearer ") => {
            bearer(state, auth.trim_start_matches("Bearer "), now)
        }
        (Some(auth), query) if auth.starts_with("JWT ") => {
            let token = auth.trim_start_matches("JWT ");
            if query.as_deref().is_some_and(|q| q != token) {
                return Err(refused("two different JWTs on one request"));
            }
            app_jwt(state, token, request, now, leeway, require_aud)
        }
        (Some(_), _) => Err(refused("unsupported Authorization scheme")),
        (None, Some(token)) => app_jwt(state, &token, request, now, leeway, require_aud),
        (None, None) => Err(refused("anonymous access is not allowed")),
    }
}

fn bearer(state: &State, token: &str, now: i64) -> Result<Caller, Refused> {
    let issued = state
        .tokens
        .get(token)
        .ok_or_else(|| refused("unknown bearer token"))?;
    if now >= issued.expires_at {
        return Err(refused("bearer token expired"));
    }
    let installation = state
        .installations
        .get(&issued.app_key)
        .filter(|i| i.is_enabled())
        .ok_or_else(|| refused("the app that holds this token is not enabled"))?;
    let user_active = state
        .content
        .users
        .get(&issued.account_id)
        .is_some_and(|u| u.active);
    if !user_active {
        return Err(refused("the token's user is deactivated"));
    }
    Ok(Caller::User {
        app_key: installation.app_key.clone(),
        account_id: issued.account_id.clone(),
        scopes: issued.scopes.clone(),
    })
}

fn app_jwt(
    state: &State,
    token: &str,
    request: Incoming<'_>,
    now: i64,
    leeway: i64,
    require_aud: bool,
) -> Result<Caller, Refused> {
    if header_alg(token).as_deref() != Some("HS256") {
        return Err(refused("JWT algorithm must be HS256"));
    }
    let unverified = peek_segment(token, 1).ok_or_else(|| refused("malformed JWT"))?;
    let issuer = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("JWT has no iss"))?;
    let installation = state
        .installations
        .get(issuer)
        .filter(|i| i.is_enabled())
        .ok_or_else(|| refused("JWT issuer is not an enabled app"))?;
    let claims = hs256_claims(token, &installation.shared_secret)
        .ok_or_else(|| refused("JWT signature does not verify"))?;
    check_times(&claims, now, leeway)?;
    let qsh = claims
        .get("qsh")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("JWT has no qsh"))?;
    if qsh == CONTEXT_QSH {
        return Err(refused("context JWTs are not accepted by the REST API"));
    }
    // docs/protocol.md §2: relative to the site's base URL, so `/wiki/api/v2/pages/1` hashes as `/api/v2/pages/1`.
    let expected = RequestParts::new(request.method, request.raw_path, request.raw_query)
        .with_base_path("/wiki")
        .qsh();
    if qsh != expected {
        return Err(refused("qsh does not match the request"));
    }
    match claims.get("aud") {
        Some(Value::String(aud)) if *aud == installation.client_key => {}
        Some(Value::Array(auds)) if auds.iter().any(|a| *a == *installation.client_key) => {}
        Some(_) => return Err(refused("JWT aud does not name this site's clientKey")),
        None if require_aud => return Err(refused("JWT has no aud")),
        None => {}
    }
    Ok(Caller::App {
        app_key: installation.app_key.clone(),
        account_id: installation.app_account_id.clone(),
    })
}

/// An answer of the OAuth server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OAuthAnswer {
    pub status: u16,
    pub body: Value,
}

fn oauth_error(status: u16, error: &str, description: &str) -> OAuthAnswer {
    OAuthAnswer {
        status,
        body: json!({"error": error, "error_description": description}),
    }
}

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ISS_PREFIX: &str = "urn:atlassian:connect:clientid:";
const SUB_PREFIX: &str = "urn:atlassian:connect:useraccountid:";

/// Parameters of the grant.
pub(crate) struct GrantInput<'a> {
    pub method: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub now: i64,
    pub leeway: i64,
    pub audience: &'a str,
    pub tenant_base_url: &'a str,
    /// A fault forces `invalid_grant`.
    pub forced_rejection: bool,
}

/// `POST /oauth2/token`: the JWT-bearer grant of docs/protocol.md §6, every claim checked.
pub(crate) fn token_grant(state: &mut State, input: &GrantInput<'_>) -> OAuthAnswer {
    let form: HashMap<String, String> = url::form_urlencoded::parse(input.body)
        .into_owned()
        .collect();
    let mut record = TokenExchange {
        account_id: None,
        scope: form.get("scope").cloned(),
        status: 0,
        error: None,
        description: None,
    };
    let answer = grant(state, input, &form, &mut record);
    record.status = answer.status;
    if answer.status != 200 {
        record.error = answer
            .body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned);
        record.description = answer
            .body
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    state.exchanges.push(record);
    answer
}

fn grant(
    state: &mut State,
    input: &GrantInput<'_>,
    form: &HashMap<String, String>,
    record: &mut TokenExchange,
) -> OAuthAnswer {
    let invalid_grant = |why: &str| oauth_error(400, "invalid_grant", why);
    if input.method != "POST" {
        return oauth_error(405, "invalid_request", "the token endpoint takes POST");
    }
    let form_encoded = input.content_type.is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form_encoded {
        return oauth_error(
            400,
            "invalid_request",
            "content-type must be application/x-www-form-urlencoded",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer",
        );
    }
    let Some(assertion) = form.get("assertion").filter(|a| !a.is_empty()) else {
        return oauth_error(400, "invalid_request", "assertion is missing");
    };
    if header_alg(assertion).as_deref() != Some("HS256") {
        return invalid_grant("assertion must be signed with HS256");
    }
    let Some(unverified) = peek_segment(assertion, 1) else {
        return invalid_grant("assertion is not a JWT");
    };
    let Some(client_id) = unverified
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| iss.strip_prefix(ISS_PREFIX))
    else {
        return oauth_error(
            401,
            "invalid_client",
            "iss must be urn:atlassian:connect:clientid:<oauthClientId>",
        );
    };
    let Some(installation) = state.installation_by_oauth_client(client_id).cloned() else {
        return oauth_error(401, "invalid_client", "unknown oauth client id");
    };
    if installation.state == crate::state::InstallState::Uninstalled {
        return oauth_error(401, "invalid_client", "the app is not installed");
    }
    if !installation.has_scope("ACT_AS_USER") {
        return oauth_error(
            400,
            "unauthorized_client",
            "the app does not have the ACT_AS_USER scope",
        );
    }
    if !installation.is_enabled() {
        return oauth_error(400, "unauthorized_client", "the app is disabled");
    }
    let Some(claims) = hs256_claims(assertion, &installation.shared_secret) else {
        return invalid_grant(
            "assertion signature does not verify with the tenant's shared secret",
        );
    };
    let account_id = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|sub| sub.strip_prefix(SUB_PREFIX))
        .filter(|id| !id.is_empty());
    record.account_id = account_id.map(str::to_owned);
    if claims.get("tnt").and_then(Value::as_str) != Some(input.tenant_base_url) {
        return invalid_grant("tnt must be the site's base URL");
    }
    match claims.get("aud") {
        Some(Value::String(aud)) if aud == input.audience => {}
        _ => return invalid_grant("aud must be the authorization server, as a string"),
    }
    let Some(account_id) = account_id else {
        return invalid_grant("sub must be urn:atlassian:connect:useraccountid:<accountId>");
    };
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return invalid_grant("iat and exp are required");
    };
    if exp <= iat || exp - iat > 60 {
        return invalid_grant("exp must be after iat and at most 60 seconds after it");
    }
    if input.now >= exp.saturating_add(input.leeway) {
        return invalid_grant("assertion expired");
    }
    if iat > input.now.saturating_add(input.leeway) {
        return invalid_grant("assertion issued in the future");
    }
    let user_ok = state
        .content
        .users
        .get(account_id)
        .is_some_and(|u| u.active && u.account_type == AccountType::Customer);
    if !user_ok {
        return invalid_grant("no active user with this accountId can be impersonated");
    }
    if input.forced_rejection || state.rejected_grants.contains(account_id) {
        return invalid_grant("the user cannot be impersonated");
    }
    let granted: Vec<String> = installation
        .scopes
        .iter()
        .filter(|s| is_product_scope(s))
        .cloned()
        .collect();
    let scopes = match form.get("scope") {
        None => granted,
        Some(asked) => {
            let asked: Vec<String> = asked.split_whitespace().map(str::to_owned).collect();
            let valid = !asked.is_empty()
                && asked
                    .iter()
                    .all(|s| is_product_scope(s) && scope_granted(&granted, s));
            if !valid {
                return oauth_error(
                    400,
                    "invalid_scope",
                    "scope must be upper-case scopes the app's descriptor grants",
                );
            }
            asked
        }
    };
    let access_token: String = format!(
        "sim-at-{}",
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>()
    );
    let expires_in = state.token_lifetime;
    state.tokens.insert(
        access_token.clone(),
        IssuedToken {
            app_key: installation.app_key.clone(),
            account_id: account_id.to_owned(),
            scopes: scopes.clone(),
            expires_at: input.now.saturating_add(expires_in),
        },
    );
    OAuthAnswer {
        status: 200,
        body: json!({
            "access_token": access_token,
            "expires_in": expires_in,
            "token_type": "Bearer",
            "scope": scopes.join(" "),
        }),
    }
}

/// Signs claims with HS256 and a shared secret.
pub(crate) fn sign_hs256(claims: &Value, secret: &str) -> Option<String> {
    let key = EncodingKey::from_secret(secret.as_bytes()).ok()?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).ok()
}

/// Signs claims with RS256 and a PEM private key, naming `kid`.
pub(crate) fn sign_rs256(claims: &Value, private_pem: &str, kid: &str) -> Option<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).ok()?;
    jsonwebtoken::encode(&header, claims, &key).ok()
}

/// A random string of `len` letters and digits.
pub(crate) fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random lower-case hex string of `len` characters.
pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// A random UUID-shaped string (v4 layout).
pub(crate) fn random_uuid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(13..16).unwrap_or_default(),
        h.get(17..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}
