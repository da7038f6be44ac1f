//! The Connect descriptor, as served: `descriptor/atlassian-connect.json` with this deployment's
//! key and base URL: `APP_BASE_URL`, or, when it is unset, the domain the request for the
//! descriptor came by ([`understudy_web::AppConfig::base_url_for`]).
//!
//! Its modules: the page webhooks, the page byline panel (`GET /ui/page`, the edit API's) and the
//! site admins' page (`adminPages`, `GET /ui/admin`, the admin function's). The admin page's
//! `user_is_admin` condition only hides its link from other users; it secures nothing: the admin
//! API asks Confluence on every call whether the caller is a site admin.

use serde_json::Value;
use understudy_web::AppConfig;

/// The descriptor as committed, with placeholders for the deployment's values.
pub const TEMPLATE: &str = include_str!("../../../descriptor/atlassian-connect.json");

/// The descriptor for this deployment, served at `base_url` (without a trailing slash, as
/// [`AppConfig::base_url_for`] gives it).
pub fn render(config: &AppConfig, base_url: &str) -> Result<Value, serde_json::Error> {
    let mut descriptor: Value = serde_json::from_str(TEMPLATE)?;
    let base_url = base_url.trim_end_matches('/');
    if let Some(object) = descriptor.as_object_mut() {
        object.insert("key".into(), Value::from(config.app_key.as_str()));
        object.insert("baseUrl".into(), Value::from(base_url));
        if let Some(vendor) = object.get_mut("vendor").and_then(Value::as_object_mut) {
            vendor.insert("url".into(), Value::from(base_url));
        }
    }
    Ok(descriptor)
}

/// Every URL path the descriptor makes Confluence call (lifecycle, webhooks, module URLs), without
/// their query strings.
pub fn paths(descriptor: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    if let Some(lifecycle) = descriptor.get("lifecycle").and_then(Value::as_object) {
        paths.extend(
            lifecycle
                .values()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
    }
    if let Some(modules) = descriptor.get("modules").and_then(Value::as_object) {
        for module in modules.values().filter_map(Value::as_array).flatten() {
            if let Some(url) = module.get("url").and_then(Value::as_str) {
                paths.push(url.split('?').next().unwrap_or(url).to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use understudy_web::routes::{self, Function};

    fn rendered() -> Value {
        let config = AppConfig::from_lookup(|name| {
            (name == "APP_BASE_URL").then(|| "https://app.example.com".to_owned())
        })
        .unwrap();
        render(&config, "https://app.example.com").unwrap()
    }

    #[test]
    fn every_url_of_the_descriptor_is_a_route_of_the_route_table() {
        let descriptor = rendered();
        let paths = paths(&descriptor);
        for path in &paths {
            assert!(
                routes::owner(path).is_some(),
                "{path} is in the descriptor but no function serves it"
            );
        }
        for route in [
            routes::INSTALLED,
            routes::PAGE_CREATED,
            routes::PAGE_PANEL,
            routes::ADMIN_PAGE,
        ] {
            assert!(
                paths.iter().any(|p| p == route.path),
                "{route:?}: {paths:?}"
            );
        }
    }

    #[test]
    fn the_admin_page_is_the_admin_functions_and_hidden_from_everyone_but_admins() {
        let descriptor = rendered();
        let pages = descriptor["modules"]["adminPages"].as_array().unwrap();
        assert_eq!(pages.len(), 1, "one admin page");
        let page = &pages[0];
        assert_eq!(page["url"], routes::ADMIN_PAGE.path);
        assert_eq!(routes::ADMIN_PAGE.method, "GET");
        assert_eq!(
            routes::owner(routes::ADMIN_PAGE.path),
            Some(Function::Admin)
        );
        assert_eq!(page["key"], "understudy-admin");
        assert_eq!(page["name"]["value"], "Understudy");
        // Hides the link only; the API checks every caller with Confluence.
        let conditions: Vec<&str> = page["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["condition"].as_str())
            .collect();
        assert_eq!(conditions, ["user_is_admin"]);
    }
}
