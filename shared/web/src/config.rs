//! The configuration every function shares, read once from the environment.

use url::Url;

use forge_auth::{AppId, FORGE_JWKS_URL};
use understudy_core::{TenantHosts, forge_api_hosts};

pub use crate::env::ConfigError;
use crate::env::{Env, FromEnv};
use crate::request::ApiRequest;

/// Settings shared by the functions (README, "Configuration").
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `APP_KEY`: the descriptor's key, the realm of 401 answers, the `iss` of the app's tokens.
    pub app_key: String,
    /// `APP_BASE_URL` (optional): the descriptor's `baseUrl` and the audience of signed installs.
    /// Unset (a stack deployed without `PublicBaseUrl` or `DomainName`), each request's own base
    /// URL takes its place: the domain API Gateway routed it by ([`Self::base_url_for`]). The local
    /// app always sets it (`http://localhost:$PORT` by default).
    pub app_base_url: Option<Url>,
    /// The audiences accepted on every signed install whatever domain it came by: `APP_BASE_URL`'s
    /// (when set), then `INSTALL_AUDIENCES` (optional, comma-separated: further base URLs, for an
    /// app that moved or serves several stages). [`Self::install_audiences_for`] adds a request's
    /// own base URL when `APP_BASE_URL` is unset.
    pub install_audiences: Vec<String>,
    /// `CONNECT_KEYS_URL` (optional): the install key server, used alone when set.
    pub connect_keys_url: Option<String>,
    /// `ALLOWED_TENANT_HOSTS` (default `*.atlassian.net`): which Confluence hosts may install.
    pub tenant_hosts: TenantHosts,
    /// `CONNECT_ALL_JS_URL` (default [`CONNECT_ALL_JS`]): the script the app's iframe pages load
    /// to talk to Confluence (`AP.context.getToken()`); tests point it at a stand-in.
    pub connect_js_url: String,
    /// The Forge front door's settings; `None` (and every `/forge/...` route 404) when
    /// `FORGE_APP_ID` is unset.
    pub forge: Option<ForgeSettings>,
}

/// The Forge front door (docs/protocol.md §17).
#[derive(Debug, Clone)]
pub struct ForgeSettings {
    /// `FORGE_APP_ID`: the app's ARI, the only audience a Forge Invocation Token may have.
    pub app_id: AppId,
    /// `FORGE_JWKS_URL` (default Atlassian's production JWKS): the keys FITs are signed with.
    pub jwks_url: String,
    /// `FORGE_API_HOSTS` (default `api.atlassian.com,api.stg.atlassian.com`): the hosts a FIT's
    /// `app.apiBaseUrl` may name (https; http only for a loopback host listed exactly).
    pub api_hosts: TenantHosts,
}

impl ForgeSettings {
    /// The JWKS over HTTPS from [`Self::jwks_url`] (no redirects, bounded size and time).
    pub fn jwks_source(&self) -> Result<std::sync::Arc<dyn forge_auth::JwksSource>, ConfigError> {
        forge_auth::HttpJwksSource::new(self.jwks_url.clone())
            .map(|source| std::sync::Arc::new(source) as std::sync::Arc<dyn forge_auth::JwksSource>)
            .map_err(|e| ConfigError::Refused(format!("FORGE_JWKS_URL: {e}")))
    }
}

/// Confluence's iframe host script, which every Connect iframe page loads.
pub const CONNECT_ALL_JS: &str = "https://connect-cdn.atl-paas.net/all.js";

/// The default app key.
pub const DEFAULT_APP_KEY: &str = "understudy";

impl AppConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        <Self as FromEnv>::from_env()
    }

    /// Reads variables through `lookup` (tests, and the local app's defaults).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        <Self as FromEnv>::from_lookup(lookup)
    }

    /// The path of the app's base URL (`""` when it is the host root): stripped before routing
    /// and hashing. Without `APP_BASE_URL` the base URL is a request's own domain, whose path is
    /// the root: `""`.
    pub fn base_path(&self) -> &str {
        self.app_base_url
            .as_ref()
            .map_or("", |url| url.path().trim_end_matches('/'))
    }

    /// The app's base URL for `request`, without a trailing slash: `APP_BASE_URL` when it is set
    /// (whatever the request), else the request's own ([`ApiRequest::own_base_url`]: the domain
    /// API Gateway routed it by). `None` only when neither is known (no `APP_BASE_URL`, and the
    /// request did not come through API Gateway).
    pub fn base_url_for(&self, request: &ApiRequest) -> Option<String> {
        match &self.app_base_url {
            Some(url) => Some(audience(url)),
            None => request.own_base_url(),
        }
    }

    /// The audiences a signed install arriving as `request` may name: [`Self::install_audiences`]
    /// (with `APP_BASE_URL` set, exactly those), preceded, when `APP_BASE_URL` is unset, by the
    /// request's own base URL. An install signed for any other URL is refused.
    pub fn install_audiences_for(&self, request: &ApiRequest) -> Vec<String> {
        let own = match self.app_base_url {
            Some(_) => None,
            None => request.own_base_url(),
        };
        own.into_iter()
            .chain(self.install_audiences.iter().cloned())
            .collect()
    }
}

impl FromEnv for AppConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let app_key = env.or("APP_KEY", DEFAULT_APP_KEY.to_owned(), |key| {
            if key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                && key.len() <= 64
            {
                Ok(key.to_owned())
            } else {
                Err("use at most 64 letters, digits, '.', '_' or '-'".into())
            }
        });
        let app_base_url = env.optional("APP_BASE_URL", parse_http_url);
        let more_audiences = env.or("INSTALL_AUDIENCES", Vec::new(), |list| {
            list.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| parse_http_url(a).map(|url| audience(&url)))
                .collect()
        });
        let connect_keys_url = env.optional("CONNECT_KEYS_URL", |url| {
            parse_http_url(url).map(|url| url.as_str().to_owned())
        });
        let tenant_hosts = env.or(
            "ALLOWED_TENANT_HOSTS",
            TenantHosts::default(),
            TenantHosts::parse,
        );
        let connect_js_url = env.or("CONNECT_ALL_JS_URL", CONNECT_ALL_JS.to_owned(), |url| {
            parse_http_url(url).map(|url| url.as_str().to_owned())
        });
        let forge = read_forge(env);
        // A value that is set but refused is a problem `env` kept: the start fails, it never falls
        // back to the request's domain.
        let install_audiences = app_base_url
            .iter()
            .map(audience)
            .chain(more_audiences)
            .collect();
        Some(Self {
            app_key,
            app_base_url,
            install_audiences,
            connect_keys_url,
            tenant_hosts,
            connect_js_url,
            forge: forge?,
        })
    }
}

/// The Forge settings: `Some(None)` when `FORGE_APP_ID` is unset, `None` when one of them is
/// refused (the problem is kept by `env`). Every variable is read either way, so the list of
/// what a function reads does not depend on the values.
fn read_forge(env: &Env<'_>) -> Option<Option<ForgeSettings>> {
    let app_id = env.optional("FORGE_APP_ID", |id| {
        AppId::parse(id).map_err(|e| e.to_string())
    });
    let jwks_url = env.or("FORGE_JWKS_URL", FORGE_JWKS_URL.to_owned(), |url| {
        parse_http_url(url).map(|url| url.as_str().to_owned())
    });
    let api_hosts = env.optional("FORGE_API_HOSTS", |hosts| forge_api_hosts(Some(hosts)));
    let configured_id = env.get("FORGE_APP_ID");
    match (configured_id, app_id) {
        (None, _) => Some(None),
        (Some(_), None) => None,
        (Some(_), Some(app_id)) => Some(Some(ForgeSettings {
            app_id,
            jwks_url,
            api_hosts: match api_hosts {
                Some(hosts) => hosts,
                None => env.check(forge_api_hosts(None))?,
            },
        })),
    }
}

/// A base URL as a signed install's audience names it: without a trailing slash.
fn audience(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http(s) URL with a host".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AppConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AppConfig::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn request_via(domain: Option<&str>) -> ApiRequest {
        let mut request = ApiRequest::from_http(
            http::Request::builder()
                .uri("/installed")
                .body(bytes::Bytes::new())
                .unwrap(),
        );
        request.domain_name = domain.map(str::to_owned);
        request
    }

    const API_DOMAIN: &str = "abc.execute-api.us-east-1.amazonaws.com";

    #[test]
    fn a_base_url_that_is_set_must_be_valid_and_is_named_when_not() {
        let err = config(&[("APP_BASE_URL", "not a url")]).unwrap_err();
        assert!(err.to_string().contains("APP_BASE_URL"));
        let err = config(&[("APP_BASE_URL", "ftp://a.example")]).unwrap_err();
        assert!(err.to_string().contains("APP_BASE_URL"));
    }

    #[test]
    fn without_a_base_url_each_request_brings_its_own_and_only_its_own() {
        let c = config(&[("INSTALL_AUDIENCES", "https://old.example.com/")]).unwrap();
        assert!(c.app_base_url.is_none());
        assert_eq!(c.base_path(), "", "a routed domain is served at its root");
        let via_api = request_via(Some(API_DOMAIN));
        assert_eq!(
            c.base_url_for(&via_api).as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com")
        );
        assert_eq!(
            c.install_audiences_for(&via_api),
            [
                "https://abc.execute-api.us-east-1.amazonaws.com",
                "https://old.example.com"
            ]
        );
        // Another request's domain is that request's, never a default for others.
        let via_custom = request_via(Some("understudy.example.com"));
        assert_eq!(
            c.install_audiences_for(&via_custom),
            ["https://understudy.example.com", "https://old.example.com"]
        );
        // Not through API Gateway: no base URL, and only the configured audiences.
        let local = request_via(None);
        assert_eq!(c.base_url_for(&local), None);
        assert_eq!(c.install_audiences_for(&local), ["https://old.example.com"]);
    }

    #[test]
    fn a_set_base_url_wins_over_the_requests_domain() {
        let c = config(&[("APP_BASE_URL", "https://app.example.com/connect/")]).unwrap();
        let via_api = request_via(Some(API_DOMAIN));
        assert_eq!(
            c.base_url_for(&via_api).as_deref(),
            Some("https://app.example.com/connect")
        );
        assert_eq!(
            c.install_audiences_for(&via_api),
            ["https://app.example.com/connect"],
            "the execute-api domain is no audience when APP_BASE_URL is set"
        );
        assert_eq!(c.install_audiences_for(&via_api), c.install_audiences);
    }

    #[test]
    fn defaults_and_audiences() {
        let c = config(&[
            ("APP_BASE_URL", "https://app.example.com/connect/"),
            (
                "INSTALL_AUDIENCES",
                "https://old.example.com/, https://staging.example.com",
            ),
        ])
        .unwrap();
        assert_eq!(c.app_key, "understudy");
        assert_eq!(c.base_path(), "/connect");
        assert_eq!(
            c.install_audiences,
            [
                "https://app.example.com/connect",
                "https://old.example.com",
                "https://staging.example.com"
            ]
        );
        assert!(c.connect_keys_url.is_none());
        assert!(
            c.tenant_hosts
                .allows("https://site.atlassian.net/wiki")
                .is_ok()
        );
    }

    #[test]
    fn a_bad_app_key_or_host_list_is_refused_at_start() {
        assert!(
            config(&[
                ("APP_BASE_URL", "https://a.example"),
                ("APP_KEY", "has \"quotes\"")
            ])
            .is_err()
        );
        assert!(
            config(&[
                ("APP_BASE_URL", "https://a.example"),
                ("ALLOWED_TENANT_HOSTS", "*")
            ])
            .is_err()
        );
    }
}
