//! Which Confluence sites may install the app, and so which hosts the app will ever call.
//!
//! The app only calls a tenant's own verified base URL; this allow-list is what makes that URL
//! trustworthy in the first place. Plain http is accepted only for loopback hosts named exactly
//! (local testing against the simulator); everything else must be https.

use std::net::IpAddr;

use url::Url;

/// Host patterns from `ALLOWED_TENANT_HOSTS`: `*.atlassian.net` (one label, any name) or an exact
/// host such as `127.0.0.1` or `site.jira-dev.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHosts {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*.suffix`: exactly one DNS label before `.suffix`.
    AnyLabelOf(String),
    /// One host, exactly.
    Exact(String),
}

impl Default for TenantHosts {
    fn default() -> Self {
        Self {
            patterns: vec![Pattern::AnyLabelOf("atlassian.net".into())],
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl TenantHosts {
    /// Parses a comma-separated list. A bare `*`, an empty list or a pattern with a wildcard
    /// anywhere but the first label is refused: an allow-list that allows everything is a mistake.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let lower = raw.to_ascii_lowercase();
            let pattern = match lower.strip_prefix("*.") {
                Some(suffix) if suffix.contains('.') && !suffix.contains('*') => {
                    Pattern::AnyLabelOf(suffix.to_owned())
                }
                Some(_) => return Err(format!("`{raw}` is too broad: use *.domain.tld")),
                None if lower.contains('*') => {
                    return Err(format!("`{raw}`: a wildcard may only be the first label"));
                }
                None => Pattern::Exact(lower),
            };
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Err("no host patterns".into());
        }
        Ok(Self { patterns })
    }

    fn matches(&self, host: &str) -> Option<&Pattern> {
        self.patterns.iter().find(|pattern| match pattern {
            Pattern::Exact(exact) => exact == host,
            Pattern::AnyLabelOf(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(is_label),
        })
    }

    /// True when a loopback host is named exactly: only then may the app call a tenant over plain
    /// http (local testing against the simulator).
    pub fn names_loopback_host(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| matches!(p, Pattern::Exact(host) if is_loopback(host)))
    }

    /// The `frame-ancestors` sources of a page the app serves into Confluence's iframe: the same
    /// hosts that may install the app (https; also http on an exactly named loopback host), so no
    /// other site can frame the app's pages (clickjacking).
    pub fn frame_ancestors(&self) -> String {
        let mut sources = Vec::with_capacity(self.patterns.len());
        for pattern in &self.patterns {
            match pattern {
                Pattern::AnyLabelOf(suffix) => sources.push(format!("https://*.{suffix}")),
                Pattern::Exact(host) if is_loopback(host) => {
                    sources.push(format!("http://{host}:*"));
                    sources.push(format!("https://{host}:*"));
                }
                Pattern::Exact(host) => sources.push(format!("https://{host}")),
            }
        }
        sources.join(" ")
    }

    /// Checks a tenant base URL from an install payload and returns it parsed: https (or http on
    /// an exactly named loopback host), an allowed host, no credentials, query or fragment.
    pub fn allows(&self, base_url: &str) -> Result<Url, String> {
        let url = Url::parse(base_url).map_err(|_| "baseUrl is not a URL".to_owned())?;
        let host = url
            .host_str()
            .ok_or("baseUrl has no host")?
            .to_ascii_lowercase();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("baseUrl must not carry credentials".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("baseUrl must not have a query or fragment".into());
        }
        let pattern = self
            .matches(&host)
            .ok_or_else(|| format!("host {host} is not allowed"))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if is_loopback(&host) && matches!(pattern, Pattern::Exact(_)) => Ok(url),
            _ => Err("baseUrl must use https".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_atlassian_sites_only() {
        let hosts = TenantHosts::default();
        assert!(hosts.allows("https://site.atlassian.net/wiki").is_ok());
        assert!(hosts.allows("https://SITE.atlassian.net/wiki").is_ok());
        for bad in [
            "http://site.atlassian.net/wiki",
            "https://atlassian.net/wiki",
            "https://a.b.atlassian.net/wiki",
            "https://site.atlassian.net.evil.com/wiki",
            "https://evilatlassian.net/wiki",
            "https://user:pw@site.atlassian.net/wiki",
            "https://site.atlassian.net/wiki?x=1",
            "https://127.0.0.1/wiki",
            "not a url",
        ] {
            assert!(hosts.allows(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_hosts_named_exactly() {
        let hosts = TenantHosts::parse("127.0.0.1, localhost, *.jira-dev.com").unwrap();
        assert!(hosts.allows("http://127.0.0.1:4000/wiki").is_ok());
        assert!(hosts.allows("http://localhost:4000/wiki").is_ok());
        assert!(hosts.allows("http://x.jira-dev.com/wiki").is_err());
        assert!(hosts.allows("https://x.jira-dev.com/wiki").is_ok());
        assert!(hosts.allows("http://127.0.0.2/wiki").is_err());
        assert!(hosts.names_loopback_host());
        assert!(!TenantHosts::default().names_loopback_host());
    }

    #[test]
    fn frames_are_allowed_from_the_installing_hosts_only() {
        assert_eq!(
            TenantHosts::default().frame_ancestors(),
            "https://*.atlassian.net"
        );
        assert_eq!(
            TenantHosts::parse("127.0.0.1, site.jira-dev.com")
                .unwrap()
                .frame_ancestors(),
            "http://127.0.0.1:* https://127.0.0.1:* https://site.jira-dev.com"
        );
    }

    #[test]
    fn over_broad_patterns_are_refused() {
        for bad in ["*", "*.com", "a.*.com", "", " , "] {
            assert!(TenantHosts::parse(bad).is_err(), "{bad}");
        }
    }
}
