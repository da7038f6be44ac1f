//! The claims of a verified Forge Invocation Token that the app uses, typed. Unknown fields are
//! ignored.

use serde::Deserialize;

/// A verified FIT's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvocationClaims {
    /// The app and its installation.
    pub app: App,
    /// The user the invocation acts for (UI invocations only): their accountId.
    pub principal: Option<String>,
    /// The product context (frontend invocations only).
    pub context: Option<Context>,
    /// The token's id.
    pub jti: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// `app`: the app, its installation and the module invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct App {
    /// `app.id`: the app's ARI.
    pub id: String,
    /// `app.installationId`: the installation's ARI (changes on reinstall; key tenant data by it).
    pub installation_id: String,
    /// `app.apiBaseUrl`, e.g. `https://api.atlassian.com/ex/confluence/<cloudId>`. Not checked
    /// here: the caller checks its host before using it.
    pub api_base_url: String,
    /// `app.installation.contexts[]`, empty when absent.
    pub contexts: Vec<InstallationContext>,
    /// `app.environment`.
    pub environment: Option<Environment>,
    /// `app.module`.
    pub module: Option<Module>,
}

/// One of `app.installation.contexts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InstallationContext {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `apiBaseUrl`.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// `cloudId`.
    #[serde(default)]
    pub cloud_id: Option<String>,
}

/// `app.environment`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Environment {
    /// `type` (`DEVELOPMENT`, `STAGING`, `PRODUCTION`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `id`.
    #[serde(default)]
    pub id: Option<String>,
}

/// `app.module`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Module {
    /// `type`, e.g. `core:endpoint`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `key`: the manifest key of the module.
    #[serde(default)]
    pub key: Option<String>,
}

/// `context`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Context {
    /// `cloudId`.
    #[serde(default)]
    pub cloud_id: Option<String>,
    /// `siteUrl`.
    #[serde(default)]
    pub site_url: Option<String>,
}

/// `app` as it travels; required fields are checked by name after parsing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawApp {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) installation_id: Option<String>,
    #[serde(default)]
    pub(crate) api_base_url: Option<String>,
    #[serde(default)]
    pub(crate) installation: Option<RawInstallation>,
    #[serde(default)]
    pub(crate) environment: Option<Environment>,
    #[serde(default)]
    pub(crate) module: Option<Module>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawInstallation {
    #[serde(default)]
    pub(crate) contexts: Vec<InstallationContext>,
}

/// `principal`: documented as the accountId; an object with `accountId` is read too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPrincipal {
    AccountId(String),
    User {
        #[serde(rename = "accountId")]
        account_id: String,
    },
}

impl RawPrincipal {
    pub(crate) fn account_id(self) -> String {
        match self {
            Self::AccountId(id) | Self::User { account_id: id } => id,
        }
    }
}
