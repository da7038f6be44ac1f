//! Forge Invocation Tokens as the platform signs them, the JWKS that verifies them, and forged
//! ones for attack tests.
//!
//! A FIT is an RS256 JWT, header `{alg: RS256, kid, typ: JWT}`, with `iss` =
//! `forge/invocation-token`, `aud` = the app's ARI, `iat`, `nbf`, `exp` = `iat` + 25 s and a fresh
//! `jti`, the `app` object (id, `appVersion`, installation, `apiBaseUrl`, contexts, environment,
//! module, license) and, for UI invocations only, `principal` and `context`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, crypto};
use serde_json::{Map, Value, json};

use crate::auth::random_uuid;
use crate::config::ForgeKey;
use crate::error::SimError;
use crate::forge::{
    ENDPOINT_MODULE_TYPE, EVENTS_ENDPOINT_KEY, ForgeInstallation, ForgeState, UI_MODULE_KEY,
    UI_MODULE_TYPE,
};
use crate::model::Page;
use crate::state::State;

/// The `iss` of every FIT.
pub(crate) const FIT_ISSUER: &str = "forge/invocation-token";

/// Who signs a FIT built from a [`FitSpec`].
#[derive(Clone, Default)]
pub enum FitSigner {
    /// The platform's current key (a genuine FIT).
    #[default]
    Sim,
    /// Another RSA key (PKCS#8 PEM), under the platform's `kid` unless the spec sets another: a
    /// forgery.
    Rsa {
        /// The private key.
        private_pem: String,
    },
    /// HS256 with a secret (the algorithm-confusion attack: the header says `HS256`).
    Hs256 {
        /// The HMAC secret (for instance the public key's PEM).
        secret: String,
    },
    /// No signature at all (`alg: none`, an empty third part).
    Unsigned,
}

impl fmt::Debug for FitSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sim => "Sim",
            Self::Rsa { .. } => "Rsa",
            Self::Hs256 { .. } => "Hs256",
            Self::Unsigned => "Unsigned",
        })
    }
}

impl FitSigner {
    fn default_alg(&self) -> &'static str {
        match self {
            Self::Sim | Self::Rsa { .. } => "RS256",
            Self::Hs256 { .. } => "HS256",
            Self::Unsigned => "none",
        }
    }
}

/// A FIT to build with [`crate::Simulator::forge_fit`]: by default the FIT of a page event (no
/// principal, no context, module `core:endpoint`), genuinely signed. Tests change any part of it:
/// the claims and the header by JSON merge patches (RFC 7396: an object merges, `null` removes a
/// member, anything else replaces), applied in order; the signer; the kid.
#[derive(Debug, Clone)]
pub struct FitSpec {
    /// `principal` (a UI invocation's user).
    pub principal: Option<String>,
    /// The page named by `context` (a UI invocation on that page); needs `principal`.
    pub page: Option<String>,
    /// `app.module.type`.
    pub module_type: String,
    /// `app.module.key`.
    pub module_key: String,
    /// Merge patches applied to the claims last, in order.
    pub claims_patches: Vec<Value>,
    /// Merge patches applied to the header last (after `alg`, `kid` and `typ` are set), in order.
    pub header_patches: Vec<Value>,
    /// Who signs.
    pub signer: FitSigner,
}

impl Default for FitSpec {
    fn default() -> Self {
        Self {
            principal: None,
            page: None,
            module_type: ENDPOINT_MODULE_TYPE.to_owned(),
            module_key: EVENTS_ENDPOINT_KEY.to_owned(),
            claims_patches: Vec::new(),
            header_patches: Vec::new(),
            signer: FitSigner::Sim,
        }
    }
}

impl FitSpec {
    /// The FIT of a page event.
    pub fn new() -> Self {
        Self::default()
    }

    /// The FIT of a UI invocation by `account_id`, on `page` if given.
    pub fn ui(account_id: &str, page: Option<&str>) -> Self {
        Self {
            principal: Some(account_id.to_owned()),
            page: page.map(str::to_owned),
            module_type: UI_MODULE_TYPE.to_owned(),
            module_key: UI_MODULE_KEY.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a merge patch of the claims (`json!({"aud": "x", "jti": null})`).
    pub fn patch(mut self, patch: Value) -> Self {
        self.claims_patches.push(patch);
        self
    }

    /// Adds a merge patch of the header (`json!({"kid": null})`).
    pub fn header(mut self, patch: Value) -> Self {
        self.header_patches.push(patch);
        self
    }

    /// Names another `kid` in the header.
    pub fn kid(self, kid: &str) -> Self {
        self.header(json!({ "kid": kid }))
    }

    /// Signs with `signer`.
    pub fn signed_by(mut self, signer: FitSigner) -> Self {
        self.signer = signer;
        self
    }
}

/// Applies a JSON merge patch (RFC 7396) to `target`.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (name, value) in members {
            if value.is_null() {
                object.remove(name);
            } else {
                merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// What a FIT is for.
#[derive(Debug, Clone)]
pub(crate) struct Invocation<'a> {
    pub module_type: &'a str,
    pub module_key: &'a str,
    /// The user in session (UI invocations only).
    pub principal: Option<&'a str>,
    /// `context` (UI invocations only).
    pub context: Option<Value>,
}

impl<'a> Invocation<'a> {
    /// A FIT for a delivery through an `endpoint` module (events, lifecycle, scheduled trigger).
    pub fn endpoint(module_key: &'a str) -> Self {
        Self {
            module_type: ENDPOINT_MODULE_TYPE,
            module_key,
            principal: None,
            context: None,
        }
    }
}

/// `context` of a UI invocation by a macro, on `page` if given.
pub(crate) fn ui_context(
    state: &State,
    installation: &ForgeInstallation,
    page: Option<&Page>,
) -> Value {
    let mut extension = json!({ "type": "macro" });
    if let (Some(page), Some(object)) = (page, extension.as_object_mut()) {
        object.insert(
            "content".into(),
            json!({ "id": page.id_string(), "type": "page" }),
        );
        let space_key = page.space_key.clone();
        let space_id = state
            .content
            .spaces
            .get(&space_key)
            .map_or(page.space_id, |s| s.id);
        object.insert(
            "space".into(),
            json!({ "id": space_id.to_string(), "key": space_key }),
        );
    }
    json!({
        "cloudId": installation.cloud_id,
        "siteUrl": installation.site_url,
        "localId": random_uuid(),
        "moduleKey": UI_MODULE_KEY,
        "extension": extension,
    })
}

/// The claims of a genuine FIT, issued `now`.
pub(crate) fn claims(
    forge: &ForgeState,
    installation: &ForgeInstallation,
    now: i64,
    invocation: &Invocation<'_>,
) -> Value {
    let mut app = json!({
        "id": installation.app_id,
        "appVersion": installation.app_version,
        "installationId": installation.installation_id,
        "apiBaseUrl": installation.api_base_url,
        "installation": {
            "contexts": [{
                "name": "confluence",
                "apiBaseUrl": installation.api_base_url,
                "cloudId": installation.cloud_id,
            }],
        },
        "environment": {"type": installation.environment_type, "id": installation.environment_id},
        "module": {"type": invocation.module_type, "key": invocation.module_key},
    });
    if let (Some(active), Some(object)) = (forge.license_active, app.as_object_mut()) {
        object.insert("license".into(), json!({ "isActive": active }));
    }
    let mut claims = json!({
        "iss": FIT_ISSUER,
        "aud": installation.app_id,
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(forge.fit_lifetime),
        "jti": random_uuid(),
        "app": app,
    });
    if let Some(object) = claims.as_object_mut() {
        if let Some(principal) = invocation.principal {
            object.insert("principal".into(), Value::from(principal));
        }
        if let Some(context) = &invocation.context {
            object.insert("context".into(), context.clone());
        }
    }
    claims
}

/// Encodes and signs a JWT from a header and claims exactly as given (the header's `alg` is not
/// checked against the signer: a forged FIT may lie).
pub(crate) fn encode(
    header: &Value,
    claims: &Value,
    signer: &FitSigner,
    platform: &ForgeKey,
) -> Result<String, SimError> {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rsa = |pem: &str| {
        EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| SimError::Signing("a FIT key is not an RSA PEM"))
    };
    let signature = match signer {
        FitSigner::Sim => crypto::sign(
            message.as_bytes(),
            &rsa(&platform.private_pem)?,
            Algorithm::RS256,
        ),
        FitSigner::Rsa { private_pem } => {
            crypto::sign(message.as_bytes(), &rsa(private_pem)?, Algorithm::RS256)
        }
        FitSigner::Hs256 { secret } => {
            let key = EncodingKey::from_secret(secret.as_bytes())
                .map_err(|_| SimError::Signing("an HS256 secret"))?;
            crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        }
        FitSigner::Unsigned => Ok(String::new()),
    }
    .map_err(|_| SimError::Signing("FIT"))?;
    Ok(format!("{message}.{signature}"))
}

/// The header of a FIT: `alg`, the platform's `kid`, `typ`.
pub(crate) fn header(alg: &str, kid: &str) -> Value {
    json!({ "alg": alg, "kid": kid, "typ": "JWT" })
}

/// Signs a genuine FIT with the platform's current key.
pub(crate) fn sign(forge: &ForgeState, claims: &Value) -> Result<String, SimError> {
    let key = forge
        .signing_key()
        .ok_or(SimError::Signing("no Forge key"))?;
    encode(&header("RS256", &key.kid), claims, &FitSigner::Sim, key)
}

/// Builds a FIT from a spec (genuine claims for the current installation, then the spec's changes).
pub(crate) fn from_spec(state: &State, now: i64, spec: &FitSpec) -> Result<String, SimError> {
    let forge = &state.forge;
    let installation = forge
        .current()
        .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))?;
    let page = match &spec.page {
        Some(id) => Some(
            id.parse::<u64>()
                .ok()
                .and_then(|id| state.content.pages.get(&id))
                .ok_or_else(|| SimError::UnknownPage(id.clone()))?,
        ),
        None => None,
    };
    let context = spec
        .principal
        .as_ref()
        .map(|_| ui_context(state, installation, page));
    let mut claims = claims(
        forge,
        installation,
        now,
        &Invocation {
            module_type: &spec.module_type,
            module_key: &spec.module_key,
            principal: spec.principal.as_deref(),
            context,
        },
    );
    for patch in &spec.claims_patches {
        merge_patch(&mut claims, patch);
    }
    let key = forge
        .signing_key()
        .ok_or(SimError::Signing("no Forge key"))?;
    let mut header = header(spec.signer.default_alg(), &key.kid);
    for patch in &spec.header_patches {
        merge_patch(&mut header, patch);
    }
    encode(&header, &claims, &spec.signer, key)
}

/// The JWKS document: every key the platform has used, RS256 signature keys named by `kid`.
pub(crate) fn jwks(keys: &[ForgeKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .filter_map(|key| {
            let encoding = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).ok()?;
            let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).ok()?;
            let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
                return None;
            };
            Some(json!({
                "kty": "RSA", "kid": key.kid, "alg": "RS256", "use": "sig",
                "n": rsa.n, "e": rsa.e,
            }))
        })
        .collect();
    json!({ "keys": keys })
}

/// The `jti` of a token, read without checking anything (for the records).
pub(crate) fn peek_jti(token: &str) -> Option<String> {
    let claims = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(claims).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("jti")?.as_str().map(str::to_owned)
}
