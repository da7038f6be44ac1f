//! The Connect descriptor, as served: `descriptor/atlassian-connect.json` with this deployment's
//! key and base URL.

use serde_json::Value;
use understudy_web::AppConfig;

/// The descriptor as committed, with placeholders for the deployment's values.
pub const TEMPLATE: &str = include_str!("../../../descriptor/atlassian-connect.json");

/// The descriptor for this deployment.
pub fn render(config: &AppConfig) -> Result<Value, serde_json::Error> {
    let mut descriptor: Value = serde_json::from_str(TEMPLATE)?;
    let base_url = config.app_base_url.as_str().trim_end_matches('/');
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
