//! `template.yaml`, `descriptor/atlassian-connect.json` and `descriptor/manifest.yml` (the Forge
//! app) read as data, for the offline deployment checks in `tests/`.
//!
//! The template is SAM YAML with CloudFormation's short-form tags (`!Ref`, `!GetAtt`, `!If`, …);
//! [`intrinsic`] reads them and their long forms (`Ref:`, `Fn::GetAtt:`) alike. Nothing here knows
//! which routes or variables are right: the tests compare what the files say.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file could not be read or parsed.
#[derive(Debug)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// One HTTP route: upper-case method and path, as API Gateway matches it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// `GET`, `POST`, …
    pub method: String,
    /// `/installed`, `/api/pages/{pageId}/edits`, …
    pub path: String,
}

impl Route {
    /// A route from a method (any case) and a path.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Which part of the descriptor a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    /// `GET /atlassian-connect.json`.
    Descriptor,
    /// A `lifecycle` URL (`POST`).
    Lifecycle,
    /// A `modules.webhooks[].url` (`POST`).
    Webhook,
    /// Any other module's `url`: a page Confluence loads in an iframe (`GET`).
    ModulePage,
}

/// The routes the descriptor makes Confluence call, without query strings, each with its kind.
pub fn descriptor_routes(descriptor: &serde_json::Value) -> BTreeMap<Route, RouteKind> {
    use serde_json::Value as J;
    let mut routes = BTreeMap::new();
    routes.insert(
        Route::new("GET", "/atlassian-connect.json"),
        RouteKind::Descriptor,
    );
    if let Some(lifecycle) = descriptor.get("lifecycle").and_then(J::as_object) {
        for url in lifecycle.values().filter_map(J::as_str) {
            routes.insert(Route::new("POST", strip_query(url)), RouteKind::Lifecycle);
        }
    }
    if let Some(modules) = descriptor.get("modules").and_then(J::as_object) {
        for (kind, entries) in modules {
            let Some(entries) = entries.as_array() else {
                continue;
            };
            for url in entries
                .iter()
                .filter_map(|m| m.get("url").and_then(J::as_str))
            {
                let route = if kind == "webhooks" {
                    (Route::new("POST", strip_query(url)), RouteKind::Webhook)
                } else {
                    (Route::new("GET", strip_query(url)), RouteKind::ModulePage)
                };
                routes.insert(route.0, route.1);
            }
        }
    }
    routes
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// An intrinsic function, short or long form: `("Ref", X)` for `!Ref X` and `{Ref: X}`,
/// `("Fn::GetAtt", X)` for `!GetAtt X` and `{Fn::GetAtt: X}`, and so on.
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let name = if name == "Ref" || name == "Condition" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            Some((name, &tagged.value))
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key == "Condition" || key.starts_with("Fn::"))
                .then(|| (key.to_owned(), inner))
        }
        _ => None,
    }
}

/// The logical id in `!Ref X` (or `{Ref: X}`), and the `X` of `X.Stage`-style SAM references.
pub fn ref_target(value: &Value) -> Option<&str> {
    match intrinsic(value)? {
        (name, Value::String(target)) if name == "Ref" => Some(target.as_str()),
        _ => None,
    }
}

/// `(logical id, attribute)` of `!GetAtt X.Attr`, `!GetAtt [X, Attr]` or the long form.
pub fn get_att(value: &Value) -> Option<(String, String)> {
    let (name, inner) = intrinsic(value)?;
    if name != "Fn::GetAtt" {
        return None;
    }
    match inner {
        Value::String(text) => {
            let (id, attr) = text.split_once('.')?;
            Some((id.to_owned(), attr.to_owned()))
        }
        Value::Sequence(parts) => match parts.as_slice() {
            [Value::String(id), Value::String(attr)] => Some((id.clone(), attr.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// A value as a list: a sequence's items, or the value alone.
pub fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// A scalar as text (strings, numbers, booleans).
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A whole number, from a number or a numeric string.
pub fn number(value: &Value) -> Option<u64> {
    scalar(value)?.trim().parse().ok()
}

/// `template.yaml`, parsed.
#[derive(Debug, Clone)]
pub struct Template {
    doc: Value,
}

/// One `AWS::Serverless::Function`, with `Globals.Function` applied as SAM applies it.
#[derive(Debug, Clone)]
pub struct Function {
    /// The logical id.
    pub logical_id: String,
    /// The resource's `Metadata`.
    pub metadata: Value,
    /// Its properties, merged over `Globals.Function` (mappings merge key by key, the function's
    /// own values win).
    pub properties: Value,
}

impl Function {
    /// A property.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.properties.get(name)
    }

    /// `Metadata.BuildProperties.Binary`: the cargo binary this function runs.
    pub fn binary(&self) -> Option<&str> {
        self.metadata
            .get("BuildProperties")
            .and_then(|p| p.get("Binary"))
            .and_then(Value::as_str)
    }

    /// `Metadata.BuildMethod`.
    pub fn build_method(&self) -> Option<&str> {
        self.metadata.get("BuildMethod").and_then(Value::as_str)
    }

    /// The environment variables' names (conditional ones included: a variable whose value is
    /// `!If [cond, value, !Ref AWS::NoValue]` is one the function may be given).
    pub fn env_names(&self) -> BTreeSet<String> {
        self.env()
            .map(|vars| vars.keys().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    /// The environment variables.
    pub fn env(&self) -> Option<&serde_yaml::Mapping> {
        self.properties
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping)
    }

    /// One environment variable's value.
    pub fn env_value(&self, name: &str) -> Option<&Value> {
        self.env()?.get(name)
    }

    /// The events, by name.
    pub fn events(&self) -> Vec<(String, &Value)> {
        self.properties
            .get("Events")
            .and_then(Value::as_mapping)
            .map(|events| {
                events
                    .iter()
                    .filter_map(|(k, v)| Some((scalar(k)?, v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The events of one `Type` (`HttpApi`, `SQS`).
    pub fn events_of_type(&self, kind: &str) -> Vec<(String, &Value)> {
        self.events()
            .into_iter()
            .filter(|(_, e)| e.get("Type").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    /// The routes of its `HttpApi` events.
    pub fn http_routes(&self) -> Vec<Route> {
        self.events_of_type("HttpApi")
            .into_iter()
            .filter_map(|(_, event)| {
                let props = event.get("Properties")?;
                Some(Route::new(
                    props.get("Method").and_then(Value::as_str)?,
                    props.get("Path").and_then(Value::as_str)?,
                ))
            })
            .collect()
    }

    /// `Timeout`, in seconds.
    pub fn timeout(&self) -> Option<u64> {
        self.property("Timeout").and_then(number)
    }
}

/// One IAM policy statement of a role.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `Allow` or `Deny`.
    pub effect: String,
    /// The actions, as written.
    pub actions: Vec<String>,
    /// The resources, as written (intrinsics included).
    pub resources: Vec<Value>,
    /// The `Condition` block, if any.
    pub condition: Option<Value>,
}

impl Template {
    /// Reads `template.yaml` at the workspace root.
    pub fn load() -> Result<Self, LoadError> {
        Self::from_path(&workspace_root().join("template.yaml"))
    }

    /// Reads a template file.
    pub fn from_path(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses template text.
    pub fn parse(text: &str) -> Result<Self, LoadError> {
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| LoadError(format!("template.yaml is not valid YAML: {e}")))?;
        if doc.get("Resources").and_then(Value::as_mapping).is_none() {
            return Err(LoadError("template.yaml has no Resources".into()));
        }
        Ok(Self { doc })
    }

    /// The whole document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// A resource by logical id.
    pub fn resource(&self, logical_id: &str) -> Option<&Value> {
        self.doc.get("Resources")?.get(logical_id)
    }

    /// A resource's `Type`.
    pub fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.resource(logical_id)?.get("Type")?.as_str()
    }

    /// A resource's properties.
    pub fn properties(&self, logical_id: &str) -> Option<&Value> {
        self.resource(logical_id)?.get("Properties")
    }

    /// Logical ids of the resources of one type.
    pub fn resources_of_type(&self, kind: &str) -> Vec<String> {
        self.doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .map(|resources| {
                resources
                    .iter()
                    .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
                    .filter_map(|(k, _)| scalar(k))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every `AWS::Serverless::Function`, with `Globals.Function` applied.
    pub fn functions(&self) -> Vec<Function> {
        let globals = self
            .doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Mapping(serde_yaml::Mapping::new()));
        self.resources_of_type("AWS::Serverless::Function")
            .into_iter()
            .filter_map(|id| {
                let resource = self.resource(&id)?;
                let own = resource
                    .get("Properties")
                    .cloned()
                    .unwrap_or(Value::Mapping(serde_yaml::Mapping::new()));
                Some(Function {
                    metadata: resource.get("Metadata").cloned().unwrap_or(Value::Null),
                    properties: merge_globals(&globals, &own),
                    logical_id: id,
                })
            })
            .collect()
    }

    /// The function that runs a binary.
    pub fn function_for_binary(&self, binary: &str) -> Option<Function> {
        self.functions()
            .into_iter()
            .find(|f| f.binary() == Some(binary))
    }

    /// The `Allow` and `Deny` statements of a role's inline policies.
    pub fn role_statements(&self, role_id: &str) -> Vec<Statement> {
        let Some(policies) = self
            .properties(role_id)
            .and_then(|p| p.get("Policies"))
            .and_then(Value::as_sequence)
        else {
            return Vec::new();
        };
        policies
            .iter()
            .filter_map(|p| p.get("PolicyDocument")?.get("Statement"))
            .flat_map(as_list)
            .map(|s| Statement {
                effect: s.get("Effect").and_then(scalar).unwrap_or_default(),
                actions: s
                    .get("Action")
                    .map(|a| as_list(a).into_iter().filter_map(scalar).collect())
                    .unwrap_or_default(),
                resources: s
                    .get("Resource")
                    .map(|r| as_list(r).into_iter().cloned().collect())
                    .unwrap_or_default(),
                condition: s.get("Condition").cloned(),
            })
            .collect()
    }

    /// Every mapping key anywhere in the document, for checks that a name appears nowhere.
    pub fn all_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        collect_keys(&self.doc, &mut keys);
        keys
    }

    /// The metrics an alarm watches: its own (`Namespace`, `MetricName`, `Dimensions`), or, for an
    /// alarm on metric math, each `Metrics[].MetricStat.Metric`.
    pub fn alarm_metrics(&self, alarm: &str) -> Vec<AlarmMetric> {
        let Some(props) = self.properties(alarm) else {
            return Vec::new();
        };
        let single = AlarmMetric::read(props);
        let math = props
            .get("Metrics")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|query| {
                let mut metric = AlarmMetric::read(query.get("MetricStat")?.get("Metric")?)?;
                metric.id = query.get("Id").and_then(scalar);
                Some(metric)
            });
        single.into_iter().chain(math).collect()
    }

    /// The expression an alarm on metric math alarms on: the one of `Metrics` with `ReturnData`
    /// true (or not given), `None` for an alarm on one metric.
    pub fn alarm_expression(&self, alarm: &str) -> Option<String> {
        self.properties(alarm)?
            .get("Metrics")?
            .as_sequence()?
            .iter()
            .filter(|query| query.get("ReturnData").and_then(Value::as_bool) != Some(false))
            .find_map(|query| query.get("Expression").and_then(scalar))
    }

    /// The logical ids an alarm's `AlarmActions` name (`!Ref X`, `!GetAtt X.Arn`).
    pub fn alarm_action_targets(&self, alarm: &str) -> Vec<String> {
        self.properties(alarm)
            .and_then(|p| p.get("AlarmActions"))
            .map(|actions| as_list(actions).into_iter().filter_map(target_id).collect())
            .unwrap_or_default()
    }
}

/// The logical id a value names: `X` of `!Ref X` or `!GetAtt X.Attr`.
pub fn target_id(value: &Value) -> Option<String> {
    ref_target(value)
        .map(str::to_owned)
        .or_else(|| get_att(value).map(|(id, _)| id))
}

/// One metric an alarm watches, as template.yaml writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmMetric {
    /// The query's `Id` in the alarm's metric math (what its expression calls it); `None` for an
    /// alarm on one metric.
    pub id: Option<String>,
    /// `AWS/Lambda`, or an intrinsic (`!Sub understudy/${AWS::StackName}`).
    pub namespace: Value,
    /// `Errors`, `5xx`, ...
    pub name: String,
    /// `(Name, Value)` of each dimension, values as written.
    pub dimensions: Vec<(String, Value)>,
}

impl AlarmMetric {
    /// The metric of a mapping with `Namespace`, `MetricName` and optional `Dimensions`.
    fn read(value: &Value) -> Option<Self> {
        Some(Self {
            id: None,
            namespace: value.get("Namespace")?.clone(),
            name: value.get("MetricName").and_then(scalar)?,
            dimensions: value
                .get("Dimensions")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|d| Some((d.get("Name").and_then(scalar)?, d.get("Value")?.clone())))
                .collect(),
        })
    }

    /// The namespace when it is plain text.
    pub fn namespace_text(&self) -> Option<String> {
        scalar(&self.namespace)
    }

    /// The value of one dimension.
    pub fn dimension(&self, name: &str) -> Option<&Value> {
        self.dimensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The logical id one dimension's value names (`!Ref X`, `!GetAtt X.QueueName`).
    pub fn dimension_target(&self, name: &str) -> Option<String> {
        self.dimension(name).and_then(target_id)
    }
}

fn collect_keys(value: &Value, keys: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = scalar(k) {
                    keys.insert(k);
                }
                collect_keys(v, keys);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        Value::Tagged(tagged) => collect_keys(&tagged.value, keys),
        _ => {}
    }
}

/// SAM's Globals rule: mappings merge key by key (the resource's values win), anything else is
/// replaced by the resource's value. Intrinsics are values, not mappings to merge.
fn merge_globals(global: &Value, own: &Value) -> Value {
    match (global, own) {
        (Value::Mapping(g), Value::Mapping(o))
            if intrinsic(global).is_none() && intrinsic(own).is_none() =>
        {
            let mut merged = g.clone();
            for (k, v) in o {
                let value = match g.get(k) {
                    Some(gv) => merge_globals(gv, v),
                    None => v.clone(),
                };
                merged.insert(k.clone(), value);
            }
            Value::Mapping(merged)
        }
        (_, own) => own.clone(),
    }
}

/// `descriptor/atlassian-connect.json`, parsed.
pub fn load_descriptor() -> Result<serde_json::Value, LoadError> {
    let path = workspace_root().join("descriptor/atlassian-connect.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| LoadError(format!("descriptor is not JSON: {e}")))
}

/// `descriptor/manifest.yml` (the Forge app), parsed.
pub fn load_manifest() -> Result<Value, LoadError> {
    let path = workspace_root().join("descriptor/manifest.yml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
    parse_manifest(&text)
}

/// Forge manifest text, parsed, with its `environment.variables` filled in at their defaults
/// (`${NAME}` in any string, as the Forge CLI fills them in from the deploying shell).
pub fn parse_manifest(text: &str) -> Result<Value, LoadError> {
    let mut doc: Value = serde_yaml::from_str(text)
        .map_err(|e| LoadError(format!("manifest.yml is not valid YAML: {e}")))?;
    if doc.get("app").and_then(Value::as_mapping).is_none() {
        return Err(LoadError("manifest.yml has no app".into()));
    }
    let defaults = manifest_variable_defaults(&doc);
    fill_variables(&mut doc, &defaults)?;
    Ok(doc)
}

/// `environment.variables`: name → default (`None` for a variable without one).
pub fn manifest_variable_defaults(manifest: &Value) -> BTreeMap<String, Option<String>> {
    manifest
        .get("environment")
        .and_then(|e| e.get("variables"))
        .and_then(Value::as_sequence)
        .map(|variables| {
            variables
                .iter()
                .filter_map(|v| match v {
                    Value::String(name) => Some((name.clone(), None)),
                    other => Some((
                        other.get("key").and_then(scalar)?,
                        other.get("default").and_then(scalar),
                    )),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fill_variables(
    value: &mut Value,
    defaults: &BTreeMap<String, Option<String>>,
) -> Result<(), LoadError> {
    match value {
        Value::String(text) => {
            for (name, default) in defaults {
                let placeholder = format!("${{{name}}}");
                if text.contains(&placeholder) {
                    let Some(default) = default else {
                        return Err(LoadError(format!(
                            "manifest.yml uses ${{{name}}}, which has no default"
                        )));
                    };
                    *text = text.replace(&placeholder, default);
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                fill_variables(item, defaults)?;
            }
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                fill_variables(item, defaults)?;
            }
        }
        Value::Tagged(tagged) => fill_variables(&mut tagged.value, defaults)?,
        _ => {}
    }
    Ok(())
}

/// One `endpoint` module of a Forge manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The module key (what triggers and UI resolvers name).
    pub key: String,
    /// The `remotes` key it calls.
    pub remote: Option<String>,
    /// `route.path`: where Forge sends trigger and scheduled-trigger invocations; none for an
    /// endpoint that only UI modules call (they name the path in `invokeRemote`).
    pub path: Option<String>,
    /// `auth.appSystemToken.enabled`.
    pub app_system_token: bool,
    /// `auth.appUserToken.enabled`.
    pub app_user_token: bool,
}

impl Endpoint {
    /// The route Forge calls for a trigger or scheduled trigger: always `POST` (Forge Remote
    /// invocation contract), at `route.path`.
    pub fn route(&self) -> Option<Route> {
        self.path.as_deref().map(|path| Route::new("POST", path))
    }
}

/// The modules of one type (`endpoint`, `trigger`, `confluence:contentBylineItem`, …).
pub fn manifest_modules<'m>(manifest: &'m Value, kind: &str) -> Vec<&'m Value> {
    manifest
        .get("modules")
        .and_then(|m| m.get(kind))
        .and_then(Value::as_sequence)
        .map(|items| items.iter().collect())
        .unwrap_or_default()
}

/// The manifest's `endpoint` modules.
pub fn manifest_endpoints(manifest: &Value) -> Vec<Endpoint> {
    let enabled = |module: &Value, token: &str| {
        module
            .get("auth")
            .and_then(|a| a.get(token))
            .and_then(|t| t.get("enabled"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    manifest_modules(manifest, "endpoint")
        .into_iter()
        .map(|module| Endpoint {
            key: module.get("key").and_then(scalar).unwrap_or_default(),
            remote: module.get("remote").and_then(scalar),
            path: module
                .get("route")
                .and_then(|r| r.get("path"))
                .and_then(scalar),
            app_system_token: enabled(module, "appSystemToken"),
            app_user_token: enabled(module, "appUserToken"),
        })
        .collect()
}

/// The routes Forge calls on the backend for triggers and scheduled triggers (the endpoints with
/// a `route.path`), each with its endpoint's key.
pub fn manifest_routes(manifest: &Value) -> BTreeMap<Route, String> {
    manifest_endpoints(manifest)
        .into_iter()
        .filter_map(|e| Some((e.route()?, e.key)))
        .collect()
}

/// The manifest's scopes: name → `allowImpersonation`, for both forms Forge accepts (a list of
/// names, or a map of names to `{allowImpersonation: bool}`).
pub fn manifest_scopes(manifest: &Value) -> BTreeMap<String, bool> {
    match manifest.get("permissions").and_then(|p| p.get("scopes")) {
        Some(Value::Sequence(names)) => names
            .iter()
            .filter_map(scalar)
            .map(|name| (name, false))
            .collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(name, options)| {
                let impersonation = options
                    .get("allowImpersonation")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                Some((scalar(name)?, impersonation))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The binary of the local app: built under `functions/`, never deployed.
pub const LOCAL_APP_BINARY: &str = "understudy";

/// One `bin` target of a workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// The binary's name.
    pub name: String,
    /// The package that builds it.
    pub package: String,
    /// The package's `Cargo.toml`.
    pub manifest_path: PathBuf,
}

/// Every `bin` target of the workspace's members, from `cargo metadata` (so a crate that joins the
/// workspace is seen at once).
pub fn workspace_bin_targets() -> Result<Vec<Binary>, LoadError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .output()
        .map_err(|e| LoadError(format!("cannot run cargo metadata: {e}")))?;
    if !output.status.success() {
        return Err(LoadError(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| LoadError(format!("cargo metadata printed no JSON: {e}")))?;
    bin_targets(&metadata)
}

/// The `bin` targets in `cargo metadata`'s output.
pub fn bin_targets(metadata: &serde_json::Value) -> Result<Vec<Binary>, LoadError> {
    use serde_json::Value as J;
    let mut binaries = Vec::new();
    for package in metadata
        .get("packages")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(manifest)) = (
            package.get("name").and_then(J::as_str),
            package.get("manifest_path").and_then(J::as_str),
        ) else {
            return Err(LoadError("cargo metadata: a package without a name".into()));
        };
        for target in package
            .get("targets")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            let is_bin = target
                .get("kind")
                .and_then(J::as_array)
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if let (true, Some(bin)) = (is_bin, target.get("name").and_then(J::as_str)) {
                binaries.push(Binary {
                    name: bin.to_owned(),
                    package: name.to_owned(),
                    manifest_path: PathBuf::from(manifest),
                });
            }
        }
    }
    Ok(binaries)
}

/// Binary name → package name, for every `bin` target of the workspace's members.
pub fn workspace_binaries() -> Result<BTreeMap<String, String>, LoadError> {
    Ok(workspace_bin_targets()?
        .into_iter()
        .map(|b| (b.name, b.package))
        .collect())
}

/// The deployed functions: every binary of a package under `functions_dir`, except the local app's.
pub fn function_binaries_in(binaries: &[Binary], functions_dir: &Path) -> BTreeMap<String, String> {
    binaries
        .iter()
        .filter(|b| b.manifest_path.starts_with(functions_dir) && b.name != LOCAL_APP_BINARY)
        .map(|b| (b.name.clone(), b.package.clone()))
        .collect()
}

/// The deployed functions of this workspace (binary → package), from `cargo metadata`: every
/// binary built by a package under `functions/`, except the local app's.
pub fn function_binaries() -> Result<BTreeMap<String, String>, LoadError> {
    let functions_dir = workspace_root().join("functions");
    let functions_dir = functions_dir
        .canonicalize()
        .map_err(|e| LoadError(format!("{}: {e}", functions_dir.display())))?;
    Ok(function_binaries_in(
        &workspace_bin_targets()?,
        &functions_dir,
    ))
}

/// Variables a function may be given although its code does not read them: the Lambda runtime's
/// and the AWS SDK's own (`AWS_LAMBDA_EXEC_WRAPPER`, …; Lambda sets `AWS_REGION` and the
/// credentials itself, and template.yaml may not).
pub fn is_platform_variable(name: &str) -> bool {
    name.starts_with("AWS_LAMBDA_") || name == "AWS_SDK_LOAD_CONFIG"
}

/// What is wrong between what a function's code reads (`read`, of which `required` have no default)
/// and what template.yaml sets for it (`set`): `None` when they agree.
pub fn environment_mismatch(
    read: &BTreeSet<String>,
    required: &BTreeSet<String>,
    set: &BTreeSet<String>,
) -> Option<String> {
    let never_read: Vec<&String> = set
        .iter()
        .filter(|name| !read.contains(*name) && !is_platform_variable(name))
        .collect();
    let not_set: Vec<&String> = required
        .iter()
        .filter(|name| !set.contains(*name))
        .collect();
    if never_read.is_empty() && not_set.is_empty() {
        return None;
    }
    Some(format!(
        "set in template.yaml but never read by the code: {never_read:?}; read by the code, with \
         no default, but not set in template.yaml: {not_set:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
Globals:
  Function:
    Runtime: provided.al2023
    Environment:
      Variables:
        A: !Ref P
        B: "1"
Resources:
  F:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties: { Binary: f }
    Properties:
      Role: !GetAtt R.Arn
      Environment:
        Variables:
          B: "2"
          C: !If [Cond, x, !Ref AWS::NoValue]
      Events:
        E:
          Type: HttpApi
          Properties: { Method: post, Path: /p }
  R:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyDocument:
            Statement:
              - { Effect: Allow, Action: s3:GetObject, Resource: { "Fn::GetAtt": [B, Arn] } }
"#;

    #[test]
    fn globals_merge_and_short_and_long_intrinsics_read_alike() {
        let template = Template::parse(SAMPLE).unwrap();
        let f = template.function_for_binary("f").unwrap();
        assert_eq!(
            f.env_names().into_iter().collect::<Vec<_>>(),
            ["A", "B", "C"]
        );
        assert_eq!(f.env_value("B").and_then(scalar).as_deref(), Some("2"));
        assert_eq!(ref_target(f.env_value("A").unwrap()), Some("P"));
        assert_eq!(
            f.property("Runtime").and_then(scalar).as_deref(),
            Some("provided.al2023")
        );
        assert_eq!(
            get_att(f.property("Role").unwrap()),
            Some(("R".into(), "Arn".into()))
        );
        assert_eq!(f.http_routes(), [Route::new("POST", "/p")]);
        let statements = template.role_statements("R");
        assert_eq!(statements.len(), 1);
        assert_eq!(
            get_att(&statements[0].resources[0]),
            Some(("B".into(), "Arn".into()))
        );
    }

    #[test]
    fn alarms_read_alike_on_one_metric_and_on_metric_math() {
        let template = Template::parse(
            r#"
Resources:
  One:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: AWS/Lambda
      MetricName: Errors
      Dimensions: [{ Name: FunctionName, Value: !Ref F }]
      AlarmActions: [!Ref Topic]
  Math:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - { Id: e, Expression: "IF(a >= 3, 100 * a / b, 0)", ReturnData: true }
        - Id: a
          ReturnData: false
          MetricStat:
            Metric: { Namespace: AWS/ApiGateway, MetricName: 5xx, Dimensions: [{ Name: ApiId, Value: !Ref Api }] }
        - Id: b
          ReturnData: false
          MetricStat:
            Metric: { Namespace: !Sub "x/${AWS::StackName}", MetricName: Count }
      AlarmActions: [{ "Fn::GetAtt": [Topic, TopicArn] }]
"#,
        )
        .unwrap();
        let one = template.alarm_metrics("One");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].namespace_text().as_deref(), Some("AWS/Lambda"));
        assert_eq!(one[0].name, "Errors");
        assert_eq!(
            one[0].dimension_target("FunctionName").as_deref(),
            Some("F")
        );
        assert_eq!(template.alarm_expression("One"), None);
        let math = template.alarm_metrics("Math");
        assert_eq!(
            math.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["5xx", "Count"]
        );
        assert_eq!(math[0].dimension_target("ApiId").as_deref(), Some("Api"));
        assert_eq!(math[1].namespace_text(), None);
        assert_eq!(math[0].id.as_deref(), Some("a"));
        assert_eq!(one[0].id, None);
        assert_eq!(
            template.alarm_expression("Math").as_deref(),
            Some("IF(a >= 3, 100 * a / b, 0)")
        );
        for alarm in ["One", "Math"] {
            assert_eq!(template.alarm_action_targets(alarm), ["Topic"]);
        }
    }

    #[test]
    fn descriptor_routes_drop_query_strings_and_know_their_kind() {
        let descriptor = serde_json::json!({
            "lifecycle": { "installed": "/installed" },
            "modules": {
                "webhooks": [{ "event": "page_created", "url": "/webhooks/page_created" }],
                "contentBylineItems": [{ "key": "k", "url": "/ui/page?pageId={content.id}" }]
            }
        });
        let routes = descriptor_routes(&descriptor);
        let expected = [
            (
                Route::new("GET", "/atlassian-connect.json"),
                RouteKind::Descriptor,
            ),
            (Route::new("GET", "/ui/page"), RouteKind::ModulePage),
            (Route::new("POST", "/installed"), RouteKind::Lifecycle),
            (
                Route::new("POST", "/webhooks/page_created"),
                RouteKind::Webhook,
            ),
        ];
        assert_eq!(routes.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn manifest_endpoints_routes_and_scopes_read_both_forms() {
        let manifest = parse_manifest(
            r#"
app: { id: "ari:cloud:ecosystem::app/x" }
modules:
  endpoint:
    - { key: events, remote: r, route: { path: /forge/events }, auth: { appSystemToken: { enabled: true } } }
    - { key: ui, remote: r, auth: { appUserToken: { enabled: true } } }
permissions:
  scopes:
    read:app-system-token: {}
    write:page:confluence: { allowImpersonation: true }
"#,
        )
        .unwrap();
        let endpoints = manifest_endpoints(&manifest);
        assert_eq!(endpoints.len(), 2);
        assert_eq!(
            endpoints[0],
            Endpoint {
                key: "events".into(),
                remote: Some("r".into()),
                path: Some("/forge/events".into()),
                app_system_token: true,
                app_user_token: false,
            }
        );
        assert_eq!(endpoints[1].route(), None);
        assert!(endpoints[1].app_user_token && !endpoints[1].app_system_token);
        assert_eq!(
            manifest_routes(&manifest).into_iter().collect::<Vec<_>>(),
            [(Route::new("POST", "/forge/events"), "events".to_owned())]
        );
        let scopes = manifest_scopes(&manifest);
        assert_eq!(scopes.get("read:app-system-token"), Some(&false));
        assert_eq!(scopes.get("write:page:confluence"), Some(&true));
        let listed =
            parse_manifest("app: {id: x}\npermissions: {scopes: [read:app-system-token]}").unwrap();
        assert_eq!(
            manifest_scopes(&listed).into_iter().collect::<Vec<_>>(),
            [("read:app-system-token".to_owned(), false)]
        );
        assert!(parse_manifest("modules: {}").is_err());
    }

    #[test]
    fn manifest_variables_are_filled_in_at_their_defaults() {
        let manifest = parse_manifest(
            r#"
app: { id: x, connect: { key: "${KEY}" } }
remotes: [{ key: r, baseUrl: "${URL}/" }]
environment:
  variables:
    - { key: KEY, default: understudy }
    - { key: URL, default: "https://a.example" }
    - NO_DEFAULT
"#,
        )
        .unwrap();
        assert_eq!(
            manifest["app"]["connect"]["key"].as_str(),
            Some("understudy")
        );
        assert_eq!(
            manifest["remotes"][0]["baseUrl"].as_str(),
            Some("https://a.example/")
        );
        let unfilled =
            parse_manifest("app: {id: \"${NO_DEFAULT}\"}\nenvironment: {variables: [NO_DEFAULT]}");
        assert!(unfilled.is_err());
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_environment_matches_when_the_template_sets_what_is_read_and_all_that_is_required() {
        let read = names(&["A", "B", "OPTIONAL"]);
        let required = names(&["A", "B"]);
        assert_eq!(
            environment_mismatch(&read, &required, &names(&["A", "B"])),
            None
        );
        assert_eq!(
            environment_mismatch(
                &read,
                &required,
                &names(&["A", "B", "AWS_LAMBDA_EXEC_WRAPPER"])
            ),
            None
        );
        let unread = environment_mismatch(&read, &required, &names(&["A", "B", "STALE"])).unwrap();
        assert!(unread.contains("STALE"), "{unread}");
        let missing = environment_mismatch(&read, &required, &names(&["A", "OPTIONAL"])).unwrap();
        assert!(missing.contains("\"B\""), "{missing}");
    }

    #[test]
    fn function_binaries_are_the_bins_under_functions_except_the_local_app() {
        let metadata = serde_json::json!({"packages": [
            {"name": "f", "manifest_path": "/w/functions/f/Cargo.toml",
             "targets": [{"name": "f", "kind": ["lib"]}, {"name": "f-one", "kind": ["bin"]},
                         {"name": "f-two", "kind": ["bin"]}]},
            {"name": "understudy", "manifest_path": "/w/functions/local/Cargo.toml",
             "targets": [{"name": "understudy", "kind": ["bin"]}]},
            {"name": "sim", "manifest_path": "/w/tests/sim/Cargo.toml",
             "targets": [{"name": "sim", "kind": ["bin"]}]}
        ]});
        let bins = bin_targets(&metadata).unwrap();
        assert_eq!(bins.len(), 4);
        let functions = function_binaries_in(&bins, Path::new("/w/functions"));
        assert_eq!(
            functions.into_keys().collect::<Vec<_>>(),
            ["f-one", "f-two"]
        );
    }
}
