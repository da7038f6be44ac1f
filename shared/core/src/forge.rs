//! What the Forge front door decides: which API hosts a Forge installation may name, the context
//! an offline user-impersonation token is asked for, and which tenant an installation belongs to.

use understudy_domain::{ClientKey, ForgeInstallation, StoreError, TenantStore};

use crate::hosts::TenantHosts;

/// `FORGE_API_HOSTS` when unset: the hosts of Atlassian's API gateway, production and staging. A
/// FIT's `app.apiBaseUrl` (for example `https://api.atlassian.com/ex/confluence/<cloudId>`) must be
/// https on one of them (plain http only for a loopback host named exactly, for tests) before the
/// app stores it or calls it (docs/protocol.md §17).
pub const DEFAULT_FORGE_API_HOSTS: &str = "api.atlassian.com,api.stg.atlassian.com";

/// The allow-list of Forge API hosts: `FORGE_API_HOSTS` (comma-separated, exact hosts or
/// `*.domain.tld`), or [`DEFAULT_FORGE_API_HOSTS`].
pub fn forge_api_hosts(configured: Option<&str>) -> Result<TenantHosts, String> {
    TenantHosts::parse(
        configured
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_FORGE_API_HOSTS),
    )
}

/// The context ARI that `offlineUserAuthToken` is asked for on a Confluence site. Atlassian
/// documents the Jira form (`ari:cloud:jira::site/<cloudId>`); the Confluence form is assumed by
/// analogy and unverified, so it is made here and nowhere else (docs/protocol.md §17). `None` for a
/// cloudId that is not the UUID-like token Atlassian issues, so no caller text reaches a query.
pub fn confluence_site_ari(cloud_id: &str) -> Option<String> {
    let valid = !cloud_id.is_empty()
        && cloud_id.len() <= 64
        && cloud_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| format!("ari:cloud:confluence::site/{cloud_id}"))
}

/// Where an installation's settings, rules and audit live, checked: a Connect tenant the store
/// links it to is followed only when it is the same site (when its install gave a cloudId, that
/// cloudId is the installation's) and still known; otherwise the installation's own key. So one
/// site's Forge events and audit can never land in another site's tenant, whatever an install
/// payload named. The front door and the worker both ask here, so they always agree.
pub async fn checked_tenant_key<S: TenantStore + ?Sized>(
    store: &S,
    installation: &ForgeInstallation,
    now: i64,
) -> Result<ClientKey, StoreError> {
    let own = installation.id.own_tenant_key();
    if installation.tenant_key == own {
        return Ok(own);
    }
    let tenant = store.get_tenant(&installation.tenant_key, now).await?;
    let same_site = tenant.as_ref().is_some_and(|tenant| {
        tenant
            .cloud_id
            .as_deref()
            .is_none_or(|cloud_id| cloud_id == installation.cloud_id)
    });
    if same_site {
        Ok(installation.tenant_key.clone())
    } else {
        tracing::error!(installation_id = %installation.id,
            linked_client_key = %installation.tenant_key.as_str(),
            "the Connect tenant linked to this Forge installation is gone or another site: link not followed");
        Ok(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_api_base_urls_must_be_on_atlassians_api_hosts() {
        let hosts = forge_api_hosts(None).unwrap();
        for good in [
            "https://api.atlassian.com/ex/confluence/0a1b2c3d-1111-2222-3333-444455556666",
            "https://api.stg.atlassian.com/ex/confluence/abc",
        ] {
            assert!(hosts.allows(good).is_ok(), "{good}");
        }
        for bad in [
            "http://api.atlassian.com/ex/confluence/abc",
            "https://api.atlassian.com.evil.example/ex/confluence/abc",
            "https://site.atlassian.net/wiki",
            "https://user@api.atlassian.com/ex/confluence/abc",
            "http://127.0.0.1:9/ex/confluence/abc",
        ] {
            assert!(hosts.allows(bad).is_err(), "{bad}");
        }
        let local = forge_api_hosts(Some("127.0.0.1")).unwrap();
        assert!(
            local
                .allows("http://127.0.0.1:4000/ex/confluence/abc")
                .is_ok()
        );
        assert!(forge_api_hosts(Some("*")).is_err());
        assert!(
            forge_api_hosts(Some("  "))
                .unwrap()
                .allows("https://api.atlassian.com/x")
                .is_ok()
        );
    }

    #[test]
    fn the_context_ari_is_made_from_a_checked_cloud_id_only() {
        assert_eq!(
            confluence_site_ari("0a1b2c3d-1111-2222-3333-444455556666").as_deref(),
            Some("ari:cloud:confluence::site/0a1b2c3d-1111-2222-3333-444455556666")
        );
        for bad in ["", "a/b", "x\"}", &"a".repeat(65)] {
            assert_eq!(confluence_site_ari(bad), None, "{bad}");
        }
    }
}
