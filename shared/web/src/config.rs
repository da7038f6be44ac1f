//! The configuration every function shares, read once from the environment.

use url::Url;

use understudy_core::TenantHosts;

pub use crate::env::ConfigError;
use crate::env::{Env, FromEnv};

/// Settings shared by the functions (README, "Configuration").
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `APP_KEY`: the descriptor's key, the realm of 401 answers, the `iss` of the app's tokens.
    pub app_key: String,
    /// `APP_BASE_URL`: the descriptor's `baseUrl` and the audience of signed installs.
    pub app_base_url: Url,
    /// `INSTALL_AUDIENCES` (optional, comma-separated): further base URLs accepted as the audience
    /// of signed installs, for an app that moved or serves several stages.
    pub install_audiences: Vec<String>,
    /// `CONNECT_KEYS_URL` (optional): the install key server, used alone when set.
    pub connect_keys_url: Option<String>,
    /// `ALLOWED_TENANT_HOSTS` (default `*.atlassian.net`): which Confluence hosts may install.
    pub tenant_hosts: TenantHosts,
}

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
    /// and hashing.
    pub fn base_path(&self) -> &str {
        self.app_base_url.path().trim_end_matches('/')
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
        let app_base_url = env.required("APP_BASE_URL", parse_http_url);
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
        let app_base_url = app_base_url?;
        let mut install_audiences = vec![audience(&app_base_url)];
        install_audiences.extend(more_audiences);
        Some(Self {
            app_key,
            app_base_url,
            install_audiences,
            connect_keys_url,
            tenant_hosts,
        })
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

    #[test]
    fn the_base_url_is_required_and_named_when_missing() {
        assert_eq!(
            config(&[]).unwrap_err(),
            ConfigError::Missing("APP_BASE_URL")
        );
        let err = config(&[("APP_BASE_URL", "not a url")]).unwrap_err();
        assert!(err.to_string().contains("APP_BASE_URL"));
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
