//! Client configuration, read once per cold start, and the map from a tenant's host to Atlassian's
//! authorization server.

use std::time::Duration;

use url::{Host, Url};

use crate::retry::RetryPolicy;

/// Environment variable: a fixed authorization server (base URL, or the full token endpoint URL when
/// it has a path). When set it is used alone, for every tenant, with no fallback to Atlassian's hosts.
pub const ENV_OAUTH_URL: &str = "ATLASSIAN_OAUTH_URL";
/// Environment variable: the total deadline of one request and its retries, in seconds.
pub const ENV_RETRY_DEADLINE_SECONDS: &str = "CONFLUENCE_RETRY_DEADLINE_SECONDS";
/// Environment variable: `true` lets tenants and the OAuth server use plain `http://` on a loopback
/// address (127.0.0.1, ::1, localhost): the local run and the end-to-end suite's simulator.
pub const ENV_ALLOW_HTTP_LOOPBACK: &str = "CONFLUENCE_ALLOW_HTTP_LOOPBACK";

/// Environment variable: where Forge offline user-impersonation tokens are asked for (the GraphQL
/// gateway). Unset: `<origin of the installation's apiBaseUrl>/graphql`, which is
/// `https://api.atlassian.com/graphql` in production (docs/protocol.md §17).
pub const ENV_FORGE_GRAPHQL_URL: &str = "FORGE_GRAPHQL_URL";

/// Environment variable: Atlassian's personal data reporting API (docs/protocol.md §19).
pub const ENV_REPORT_ACCOUNTS_URL: &str = "ATLASSIAN_REPORT_ACCOUNTS_URL";
/// Where accounts are reported when [`ENV_REPORT_ACCOUNTS_URL`] is unset.
pub const REPORT_ACCOUNTS_URL: &str = "https://api.atlassian.com/app/report-accounts/";

/// The production authorization server, also the default for hosts of no known family.
pub const OAUTH_SERVER_PRODUCTION: &str =
    "https://oauth-2-authorization-server.services.atlassian.com";
/// FedRAMP production (`*.atlassian-us-gov-mod.net` sites).
pub const OAUTH_SERVER_FEDRAMP: &str =
    "https://oauth-2-authorization-server.services.atlassian-us-gov-mod.com";
/// Staging (`*.jira-dev.com` sites).
pub const OAUTH_SERVER_STAGING: &str =
    "https://oauth-2-authorization-server.stg.services.atlassian.com";
/// FedRAMP staging (`*.atlassian-stg-fedm.net` sites).
pub const OAUTH_SERVER_FEDRAMP_STAGING: &str =
    "https://oauth-2-authorization-server.stg.services.atlassian-us-gov-mod.com";

/// The authorization server Atlassian uses for a tenant's base URL, as atlassian-connect-express
/// 11.5.3 maps it (`lib/internal/oauth2.js`, `getAuthorizationServer`). Unknown hosts (custom
/// domains) get production, as there. This is also the assertion's `aud`, which stays this value when
/// [`ENV_OAUTH_URL`] redirects the request elsewhere.
pub fn authorization_server_for(tenant_base_url: &Url) -> &'static str {
    let host = tenant_base_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    if host.ends_with(".atlassian.net") || host.ends_with(".jira.com") {
        OAUTH_SERVER_PRODUCTION
    } else if host.ends_with(".atlassian-us-gov-mod.net") {
        OAUTH_SERVER_FEDRAMP
    } else if host.ends_with(".jira-dev.com") {
        OAUTH_SERVER_STAGING
    } else if host.ends_with(".atlassian-stg-fedm.net") {
        OAUTH_SERVER_FEDRAMP_STAGING
    } else {
        OAUTH_SERVER_PRODUCTION
    }
}

/// Why a configuration could not be built. Names the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set but unusable.
    #[error("environment variable {name}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("HTTP client could not be built")]
    HttpClient,
}

/// How the client talks to Confluence and the authorization server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `User-Agent` on every request; names the app.
    pub user_agent: String,
    /// A fixed authorization server instead of the per-host map ([`ENV_OAUTH_URL`]).
    pub oauth_url: Option<Url>,
    /// Retries and deadlines, for Confluence and the authorization server alike.
    pub retry: RetryPolicy,
    /// A user token with less than this left is refreshed before use.
    pub token_refresh_margin: Duration,
    /// Scopes asked for when acting as a user; `None` sends no `scope`, which means the app's scopes.
    pub user_scopes: Option<Scopes>,
    /// Allow `http://` to loopback hosts (local run, tests). Never set in Lambda.
    pub allow_http_loopback: bool,
    /// Connect timeout of the HTTP client.
    pub connect_timeout: Duration,
    /// A fixed Forge GraphQL endpoint ([`ENV_FORGE_GRAPHQL_URL`]) instead of the installation's
    /// API origin.
    pub forge_graphql_url: Option<Url>,
    /// Atlassian's personal data reporting API ([`ENV_REPORT_ACCOUNTS_URL`]); `None` for
    /// [`REPORT_ACCOUNTS_URL`].
    pub report_accounts_url: Option<Url>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            user_agent: format!(
                "understudy/{} (Atlassian Connect app for Confluence Cloud)",
                env!("CARGO_PKG_VERSION")
            ),
            oauth_url: None,
            retry: RetryPolicy::default(),
            token_refresh_margin: Duration::from_secs(60),
            user_scopes: None,
            allow_http_loopback: false,
            connect_timeout: Duration::from_secs(5),
            forge_graphql_url: None,
            report_accounts_url: None,
        }
    }
}

impl ClientConfig {
    /// The defaults, with [`ENV_OAUTH_URL`], [`ENV_RETRY_DEADLINE_SECONDS`] and
    /// [`ENV_ALLOW_HTTP_LOOPBACK`] applied when set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Self::from_env`], reading variables through `lookup` (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(value) = lookup(ENV_ALLOW_HTTP_LOOPBACK) {
            config.allow_http_loopback = match value.trim() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: ENV_ALLOW_HTTP_LOOPBACK,
                        reason: "expected true or false",
                    });
                }
            };
        }
        if let Some(value) = lookup(ENV_OAUTH_URL).filter(|v| !v.trim().is_empty()) {
            let url = Url::parse(value.trim()).map_err(|_| ConfigError::Invalid {
                name: ENV_OAUTH_URL,
                reason: "not an absolute URL",
            })?;
            if !scheme_allowed(&url, config.allow_http_loopback) {
                return Err(ConfigError::Invalid {
                    name: ENV_OAUTH_URL,
                    reason: "must be https (http only on a loopback host, with CONFLUENCE_ALLOW_HTTP_LOOPBACK)",
                });
            }
            config.oauth_url = Some(url);
        }
        if let Some(value) = lookup(ENV_FORGE_GRAPHQL_URL).filter(|v| !v.trim().is_empty()) {
            let url = Url::parse(value.trim()).map_err(|_| ConfigError::Invalid {
                name: ENV_FORGE_GRAPHQL_URL,
                reason: "not an absolute URL",
            })?;
            if !scheme_allowed(&url, config.allow_http_loopback) || !url.username().is_empty() {
                return Err(ConfigError::Invalid {
                    name: ENV_FORGE_GRAPHQL_URL,
                    reason: "must be https without credentials (http only on a loopback host, with CONFLUENCE_ALLOW_HTTP_LOOPBACK)",
                });
            }
            config.forge_graphql_url = Some(url);
        }
        if let Some(value) = lookup(ENV_REPORT_ACCOUNTS_URL).filter(|v| !v.trim().is_empty()) {
            let url = Url::parse(value.trim()).map_err(|_| ConfigError::Invalid {
                name: ENV_REPORT_ACCOUNTS_URL,
                reason: "not an absolute URL",
            })?;
            if !scheme_allowed(&url, config.allow_http_loopback) || !url.username().is_empty() {
                return Err(ConfigError::Invalid {
                    name: ENV_REPORT_ACCOUNTS_URL,
                    reason: "must be https without credentials (http only on a loopback host, with CONFLUENCE_ALLOW_HTTP_LOOPBACK)",
                });
            }
            config.report_accounts_url = Some(url);
        }
        if let Some(value) = lookup(ENV_RETRY_DEADLINE_SECONDS) {
            let seconds: u64 = value.trim().parse().map_err(|_| ConfigError::Invalid {
                name: ENV_RETRY_DEADLINE_SECONDS,
                reason: "expected whole seconds",
            })?;
            if seconds == 0 || seconds > 900 {
                return Err(ConfigError::Invalid {
                    name: ENV_RETRY_DEADLINE_SECONDS,
                    reason: "must be between 1 and 900 (a Lambda timeout is at most 900 s)",
                });
            }
            config.retry.total_deadline = Duration::from_secs(seconds);
        }
        Ok(config)
    }

    /// The Forge GraphQL endpoint for an installation: the configured one, else
    /// `<origin of api_base_url>/graphql`.
    pub(crate) fn forge_graphql_endpoint(&self, api_base_url: &str) -> Result<Url, &'static str> {
        if let Some(url) = &self.forge_graphql_url {
            return Ok(url.clone());
        }
        let base =
            Url::parse(api_base_url).map_err(|_| "the installation's apiBaseUrl is not a URL")?;
        if !scheme_allowed(&base, self.allow_http_loopback) {
            return Err("the installation's apiBaseUrl is not https");
        }
        base.join("/graphql")
            .map_err(|_| "cannot build the GraphQL endpoint")
    }

    /// The token endpoint and the assertion audience for a tenant.
    pub(crate) fn oauth_endpoint(
        &self,
        tenant_base_url: &Url,
    ) -> Result<(Url, &'static str), &'static str> {
        let audience = authorization_server_for(tenant_base_url);
        let base = match &self.oauth_url {
            Some(url) => url.clone(),
            None => Url::parse(audience).map_err(|_| "unparseable authorization server")?,
        };
        if !scheme_allowed(&base, self.allow_http_loopback) {
            return Err("must be https");
        }
        let endpoint = if base.path().trim_end_matches('/').is_empty() {
            base.join("/oauth2/token")
                .map_err(|_| "cannot build the token endpoint")?
        } else {
            base
        };
        Ok((endpoint, audience))
    }
}

/// `https`, or `http` to a loopback host when allowed.
pub(crate) fn scheme_allowed(url: &Url, allow_http_loopback: bool) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" if allow_http_loopback => match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

/// OAuth scopes for a user token: upper case, de-duplicated, sorted, space-separated (`READ WRITE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scopes(String);

impl Scopes {
    /// Builds scopes from names in any case; `None` if a name is empty or has a character outside
    /// `[A-Za-z_]`, or there are none.
    pub fn new<I, S>(names: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().trim().to_ascii_uppercase())
            .collect();
        if names.is_empty()
            || names
                .iter()
                .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        {
            return None;
        }
        names.sort();
        names.dedup();
        Some(Self(names.join(" ")))
    }

    /// The form sent as `scope`: `READ WRITE`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn each_host_family_gets_its_authorization_server() {
        let cases = [
            ("https://acme.atlassian.net/wiki", OAUTH_SERVER_PRODUCTION),
            ("https://old.jira.com/wiki", OAUTH_SERVER_PRODUCTION),
            (
                "https://agency.atlassian-us-gov-mod.net/wiki",
                OAUTH_SERVER_FEDRAMP,
            ),
            ("https://dev.jira-dev.com/wiki", OAUTH_SERVER_STAGING),
            (
                "https://gov.atlassian-stg-fedm.net/wiki",
                OAUTH_SERVER_FEDRAMP_STAGING,
            ),
            ("https://wiki.example.com/wiki", OAUTH_SERVER_PRODUCTION),
            // A look-alike suffix is not the family.
            (
                "https://evilatlassian-us-gov-mod.net/wiki",
                OAUTH_SERVER_PRODUCTION,
            ),
        ];
        for (base, server) in cases {
            assert_eq!(authorization_server_for(&url(base)), server, "{base}");
        }
    }

    #[test]
    fn the_endpoint_is_the_server_plus_oauth2_token_and_an_override_keeps_the_audience() {
        let config = ClientConfig::default();
        let (endpoint, aud) = config
            .oauth_endpoint(&url("https://agency.atlassian-us-gov-mod.net/wiki"))
            .unwrap();
        assert_eq!(
            endpoint.as_str(),
            "https://oauth-2-authorization-server.services.atlassian-us-gov-mod.com/oauth2/token"
        );
        assert_eq!(aud, OAUTH_SERVER_FEDRAMP);

        let lookup = |name: &str| match name {
            ENV_OAUTH_URL => Some("http://127.0.0.1:9/".to_owned()),
            ENV_ALLOW_HTTP_LOOPBACK => Some("true".to_owned()),
            _ => None,
        };
        let config = ClientConfig::from_lookup(lookup).unwrap();
        let (endpoint, aud) = config
            .oauth_endpoint(&url("https://dev.jira-dev.com/wiki"))
            .unwrap();
        assert_eq!(endpoint.as_str(), "http://127.0.0.1:9/oauth2/token");
        assert_eq!(aud, OAUTH_SERVER_STAGING);

        // A full endpoint URL is used as given.
        let config = ClientConfig::from_lookup(|name| {
            (name == ENV_OAUTH_URL).then(|| "https://oauth.example.test/custom/token".to_owned())
        })
        .unwrap();
        let (endpoint, _) = config
            .oauth_endpoint(&url("https://a.atlassian.net/wiki"))
            .unwrap();
        assert_eq!(endpoint.as_str(), "https://oauth.example.test/custom/token");
    }

    #[test]
    fn bad_variables_are_named_in_the_error() {
        let err =
            ClientConfig::from_lookup(|n| (n == ENV_OAUTH_URL).then(|| "http://10.0.0.1/".into()))
                .unwrap_err();
        assert!(err.to_string().contains(ENV_OAUTH_URL));
        let err =
            ClientConfig::from_lookup(|n| (n == ENV_RETRY_DEADLINE_SECONDS).then(|| "soon".into()))
                .unwrap_err();
        assert!(err.to_string().contains(ENV_RETRY_DEADLINE_SECONDS));
        let ok =
            ClientConfig::from_lookup(|n| (n == ENV_RETRY_DEADLINE_SECONDS).then(|| "25".into()))
                .unwrap();
        assert_eq!(ok.retry.total_deadline, Duration::from_secs(25));
        assert!(!ok.allow_http_loopback);
    }

    #[test]
    fn plain_http_is_only_for_loopback_when_allowed() {
        assert!(scheme_allowed(&url("https://a.atlassian.net/wiki"), false));
        assert!(!scheme_allowed(&url("http://127.0.0.1:8080/wiki"), false));
        assert!(scheme_allowed(&url("http://127.0.0.1:8080/wiki"), true));
        assert!(scheme_allowed(&url("http://localhost/wiki"), true));
        assert!(!scheme_allowed(&url("http://a.atlassian.net/wiki"), true));
        assert!(!scheme_allowed(&url("ftp://127.0.0.1/wiki"), true));
    }

    #[test]
    fn scopes_are_upper_case_sorted_and_space_separated() {
        assert_eq!(
            Scopes::new(["write", "read", "READ"]).unwrap().as_str(),
            "READ WRITE"
        );
        assert_eq!(
            Scopes::new(["act_as_user"]).unwrap().as_str(),
            "ACT_AS_USER"
        );
        assert!(Scopes::new(Vec::<String>::new()).is_none());
        assert!(Scopes::new(["read write"]).is_none());
        assert!(Scopes::new([""]).is_none());
    }
}
