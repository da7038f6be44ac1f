//! Per-tenant settings (restricted-page policy, edit rules).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tenant's settings document. Opaque JSON for now: the policy issues give it a schema and parse it
/// where it is used, so the store never rejects a document written by a newer version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// The settings as JSON.
    pub document: Value,
}
