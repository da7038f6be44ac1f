//! The Confluence simulator seen from the app: its installation as the tenant the app stores, and
//! the Confluence client configured to talk to it.

use confluence_sim::{Installation, Simulator};
use serde_json::json;
use understudy_confluence::ClientConfig;
use understudy_domain::Tenant;

/// The tenant the app stores when `sim` installs it as `installation`.
pub fn sim_tenant(sim: &Simulator, installation: &Installation) -> Tenant {
    let mut payload = json!({
        "key": installation.app_key,
        "clientKey": installation.client_key,
        "sharedSecret": installation.shared_secret,
        "baseUrl": sim.site_base_url(),
        "productType": "confluence",
    });
    if let Some(id) = &installation.oauth_client_id {
        payload["oauthClientId"] = json!(id);
    }
    Tenant::from_install_payload(payload, sim.now()).unwrap_or_else(|e| panic!("tenant: {e}"))
}

/// The client's configuration for `sim`: its OAuth server, and plain HTTP on loopback allowed.
pub fn sim_client_config(sim: &Simulator) -> ClientConfig {
    ClientConfig::from_lookup(|name| match name {
        "ATLASSIAN_OAUTH_URL" => Some(sim.oauth_url()),
        "CONFLUENCE_ALLOW_HTTP_LOOPBACK" => Some("true".to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("client config: {e}"))
}
