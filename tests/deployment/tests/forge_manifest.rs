//! descriptor/manifest.yml (the Forge app) checked offline against what it must agree with: the
//! route table (`understudy_web::routes`) and the function that serves each route, template.yaml's
//! HttpApi events for that function, the Connect descriptor (same key, same backend, one Forge
//! event per Connect webhook), the UI resources' calls (the byline panel's
//! descriptor/forge/src/routes.json, the admin page's descriptor/forge/src/admin/routes.json), the
//! settings the stack reads (`AppConfig`), and the scopes the backend's Confluence calls need.
//! Atlassian's own @forge/manifest validates the file itself (tests/interop/tests/forge_manifest.rs).

// Helpers of a test file may fail the test the short way, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use deployment_tests::{
    Endpoint, Route, Template, intrinsic, load_descriptor, load_manifest, manifest_endpoints,
    manifest_modules, manifest_routes, manifest_scopes, ref_target, scalar, workspace_root,
};
use serde_yaml::Value;
use understudy_web::AppConfig;
use understudy_web::routes::{self, Function};

/// The routes Forge calls for triggers and the scheduled trigger, and who must serve them.
const FORGE_ROUTES: [(routes::Route, Function); 3] = [
    (routes::FORGE_EVENTS, Function::Webhooks),
    (routes::FORGE_LIFECYCLE, Function::Lifecycle),
    (routes::FORGE_SCHEDULED, Function::Lifecycle),
];

/// The Connect webhooks and the Forge events that replace them (docs: shared reference, §5).
const CONNECT_TO_FORGE_EVENTS: [(&str, &str); 3] = [
    ("page_created", "avi:confluence:created:page"),
    ("page_updated", "avi:confluence:updated:page"),
    (
        "content_permissions_updated",
        "avi:confluence:permissions_updated:page",
    ),
];

/// The Forge lifecycle events the backend takes (no uninstall event reaches a remote).
const LIFECYCLE_EVENTS: [&str; 2] = ["avi:forge:installed:app", "avi:forge:upgraded:app"];

/// Every scope the app asks for, and whether it may be used with offline user impersonation.
/// Least privilege: a new scope is added here on purpose, with the call that needs it. (No
/// Connect scopes such as act-as-user: the Forge door impersonates through Forge.)
const SCOPES: [(&str, bool); 9] = [
    // The tokens Forge hands to the remote.
    ("read:app-system-token", false),
    ("read:app-user-token", false),
    // The page events.
    ("read:confluence-content.summary", false),
    // GET / PUT /wiki/api/v2/pages/{id}, as the app or as the user it acts for.
    ("read:page:confluence", true),
    ("write:page:confluence", true),
    // GET .../restriction/byOperation and /wiki/rest/api/user/current.
    ("read:content-details:confluence", true),
    // PUT .../restriction/byOperation/{operation}/user: a user grants the app access.
    ("write:content.restriction:confluence", true),
    // POST .../permission/check: may this user view the page.
    ("read:content.permission:confluence", false),
    // GET /wiki/rest/api/user?accountId=…&expand=operations, as the app: is the admin API's caller
    // a site admin.
    ("read:user:confluence", false),
];

fn manifest() -> Value {
    load_manifest().expect("descriptor/manifest.yml loads")
}

fn template() -> Template {
    Template::load().expect("template.yaml loads")
}

fn text<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut at = value;
    for key in path {
        at = at.get(*key)?;
    }
    at.as_str()
}

fn endpoint<'e>(endpoints: &'e [Endpoint], key: &str) -> &'e Endpoint {
    endpoints
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no endpoint module `{key}` in descriptor/manifest.yml"))
}

fn table_route(route: &Route) -> Option<&'static routes::Route> {
    routes::ROUTES
        .iter()
        .find(|r| r.method == route.method && r.path == route.path)
}

/// The `HttpApi` routes template.yaml gives the function that runs `function`'s binary.
fn template_routes(template: &Template, function: Function) -> BTreeSet<Route> {
    template
        .function_for_binary(function.binary())
        .unwrap_or_else(|| panic!("template.yaml runs no {}", function.binary()))
        .http_routes()
        .into_iter()
        .collect()
}

/// A trigger's events: plain names or `{eventType, filter}` objects.
fn trigger_events(trigger: &Value) -> BTreeSet<String> {
    trigger
        .get("events")
        .and_then(Value::as_sequence)
        .map(|events| {
            events
                .iter()
                .filter_map(|e| scalar(e).or_else(|| e.get("eventType").and_then(scalar)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_forge_endpoint_route_is_served_by_its_function_and_routed_to_it_by_the_template() {
    let manifest = manifest();
    let template = template();
    let named: BTreeMap<Route, String> = manifest_routes(&manifest);
    let expected: BTreeSet<Route> = FORGE_ROUTES
        .iter()
        .map(|(r, _)| Route::new(r.method, r.path))
        .collect();
    assert_eq!(
        named.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the endpoints with a route.path in descriptor/manifest.yml are not exactly the Forge \
         routes of the route table"
    );
    for (route, key) in &named {
        let served = table_route(route).unwrap_or_else(|| {
            panic!("endpoint `{key}`: {route} is not in the route table (understudy_web::routes)")
        });
        let (_, function) = FORGE_ROUTES
            .iter()
            .find(|(r, _)| r.path == route.path)
            .unwrap();
        assert_eq!(
            served.function, *function,
            "endpoint `{key}`: {route} is served by {:?}, the Forge front door expects {:?}",
            served.function, function
        );
        assert!(
            template_routes(&template, served.function).contains(route),
            "endpoint `{key}`: {route} is not an HttpApi event of the {} function in template.yaml",
            served.function.binary()
        );
    }
    // And the other way: the route table has no Forge route the manifest leaves uncalled.
    for r in routes::ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/forge/"))
    {
        assert!(
            named.contains_key(&Route::new(r.method, r.path)),
            "{} {} is in the route table but no endpoint of descriptor/manifest.yml routes to it",
            r.method,
            r.path
        );
    }
}

#[test]
fn triggers_deliver_exactly_the_expected_events_to_system_token_endpoints() {
    let manifest = manifest();
    let endpoints = manifest_endpoints(&manifest);
    let mut delivered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for trigger in manifest_modules(&manifest, "trigger") {
        let key = text(trigger, &["key"]).unwrap_or("?");
        assert!(
            trigger.get("function").is_none(),
            "trigger `{key}`: this app has no Forge functions; triggers go to the remote"
        );
        let target = endpoint(&endpoints, text(trigger, &["endpoint"]).unwrap_or_default());
        assert!(
            target.app_system_token && !target.app_user_token,
            "trigger `{key}`: its endpoint `{}` must get the app system token and never a user \
             token (triggers carry no user)",
            target.key
        );
        let path = target.path.clone().unwrap_or_else(|| {
            panic!(
                "trigger `{key}`: endpoint `{}` has no route.path",
                target.key
            )
        });
        for event in trigger_events(trigger) {
            assert!(
                delivered
                    .entry(path.clone())
                    .or_default()
                    .insert(event.clone()),
                "{event} is delivered twice to {path}"
            );
        }
    }
    let page_events: BTreeSet<String> = CONNECT_TO_FORGE_EVENTS
        .iter()
        .map(|(_, forge)| (*forge).to_owned())
        .collect();
    let lifecycle: BTreeSet<String> = LIFECYCLE_EVENTS.iter().map(|e| (*e).to_owned()).collect();
    let expected = BTreeMap::from([
        (routes::FORGE_EVENTS.path.to_owned(), page_events),
        (routes::FORGE_LIFECYCLE.path.to_owned(), lifecycle),
    ]);
    assert_eq!(delivered, expected, "trigger events by endpoint path");

    // Every page webhook of the Connect descriptor has its Forge event (the two doors see the
    // same changes), and the manifest asks for no page event the descriptor does not.
    let descriptor = load_descriptor().unwrap();
    let webhooks: BTreeSet<&str> = descriptor["modules"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["event"].as_str())
        .collect();
    let mapped: BTreeSet<&str> = CONNECT_TO_FORGE_EVENTS.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        webhooks, mapped,
        "the Connect webhooks and their Forge events (CONNECT_TO_FORGE_EVENTS) differ"
    );
}

#[test]
fn an_hourly_scheduled_trigger_hands_the_backend_a_fresh_system_token() {
    let manifest = manifest();
    let endpoints = manifest_endpoints(&manifest);
    let scheduled = manifest_modules(&manifest, "scheduledTrigger");
    assert_eq!(scheduled.len(), 1, "one scheduled trigger");
    let trigger = scheduled[0];
    assert_eq!(text(trigger, &["interval"]), Some("hour"));
    let target = endpoint(&endpoints, text(trigger, &["endpoint"]).unwrap_or_default());
    assert_eq!(
        target.route(),
        Some(Route::new("POST", routes::FORGE_SCHEDULED.path))
    );
    assert!(
        target.app_system_token && !target.app_user_token,
        "the scheduled trigger exists to deliver the system token"
    );
}

#[test]
fn scopes_are_exactly_the_needed_ones_with_impersonation_on_the_writes() {
    let scopes = manifest_scopes(&manifest());
    let expected: BTreeMap<String, bool> = SCOPES
        .iter()
        .map(|(name, impersonation)| ((*name).to_owned(), *impersonation))
        .collect();
    assert!(
        scopes.contains_key("read:app-system-token"),
        "endpoints get the app system token only with read:app-system-token"
    );
    for write in [
        "write:page:confluence",
        "write:content.restriction:confluence",
    ] {
        assert_eq!(
            scopes.get(write),
            Some(&true),
            "{write} needs allowImpersonation: true (edits and grants as the user)"
        );
    }
    assert_eq!(scopes, expected, "permissions.scopes");
    let endpoints = manifest_endpoints(&manifest());
    if endpoints.iter().any(|e| e.app_user_token) {
        assert!(scopes.contains_key("read:app-user-token"));
    }
}

/// A UI module of `kind` (exactly one): its resolver is a UI endpoint with both tokens, its resource
/// is a UI Kit source next to the manifest that calls the backend with `invokeRemote` on the routes
/// of the `routes.json` beside it, and those routes are exactly `expected`: in the route table,
/// served by `function`, and routed to it by template.yaml. Gives the endpoint's key.
fn check_ui_module(
    kind: &str,
    function: Function,
    expected: &[routes::Route],
    why_tokens: &str,
) -> String {
    let manifest = manifest();
    let template = template();
    let endpoints = manifest_endpoints(&manifest);
    let modules = manifest_modules(&manifest, kind);
    assert_eq!(modules.len(), 1, "one {kind} module");
    let module = modules[0];
    let resolver = endpoint(
        &endpoints,
        text(module, &["resolver", "endpoint"])
            .unwrap_or_else(|| panic!("the {kind} module's resolver.endpoint")),
    );
    assert!(
        resolver.path.is_none(),
        "`{}`: a UI endpoint has no route.path (the UI names each path in invokeRemote)",
        resolver.key
    );
    assert!(
        resolver.app_user_token && resolver.app_system_token,
        "`{}`: {why_tokens}",
        resolver.key
    );
    assert_eq!(
        text(module, &["render"]),
        Some("native"),
        "{kind}: a UI Kit resource"
    );

    // The resource is the UI's source, next to the manifest.
    let resource_key = text(module, &["resource"]).unwrap();
    let resources = manifest
        .get("resources")
        .and_then(Value::as_sequence)
        .unwrap();
    let resource = resources
        .iter()
        .find(|r| text(r, &["key"]) == Some(resource_key))
        .unwrap_or_else(|| panic!("no resource `{resource_key}`"));
    let source_path = workspace_root()
        .join("descriptor")
        .join(text(resource, &["path"]).unwrap());
    let source = std::fs::read_to_string(&source_path)
        .unwrap_or_else(|e| panic!("{}: {e}", source_path.display()));
    assert!(
        source.contains("from '@forge/bridge'")
            && source.contains("invokeRemote(")
            && source.contains("from './routes.json'"),
        "{} calls the backend with invokeRemote on the routes of routes.json",
        source_path.display()
    );

    // Every route the UI calls is a route of `function`, routed to it by the template.
    let routes_path = source_path.with_file_name("routes.json");
    let called: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&routes_path).unwrap()).unwrap();
    let called: BTreeSet<Route> = called
        .as_object()
        .unwrap()
        .values()
        .map(|r| Route::new(r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    let served_by_template = template_routes(&template, function);
    for route in &called {
        let served = table_route(route).unwrap_or_else(|| {
            panic!(
                "{} calls {route}, which is not in the route table",
                routes_path.display()
            )
        });
        assert_eq!(served.function, function, "{route}");
        assert!(
            served_by_template.contains(route),
            "{route} is not an HttpApi event of the {} function in template.yaml",
            function.binary()
        );
    }
    let expected: BTreeSet<Route> = expected
        .iter()
        .map(|r| Route::new(r.method, r.path))
        .collect();
    assert_eq!(
        called,
        expected,
        "the routes {} lists",
        routes_path.display()
    );
    resolver.key.clone()
}

#[test]
fn the_byline_panel_calls_the_edit_api_through_a_ui_endpoint_on_routes_it_serves() {
    // The panel lists the audit and makes edits.
    check_ui_module(
        "confluence:contentBylineItem",
        Function::EditApi,
        &[routes::PAGE_EDITS, routes::PAGE_AUDIT],
        "the edit API acts as the user (user token) and asks for offline user tokens (system \
         token)",
    );
}

#[test]
fn the_global_settings_page_calls_every_admin_api_route_through_a_ui_endpoint() {
    // Every admin route but the Connect page itself: the Forge page is the UI Kit resource.
    let api: Vec<routes::Route> = routes::ROUTES
        .iter()
        .filter(|r| r.function == Function::Admin && r.path.starts_with("/api/"))
        .copied()
        .collect();
    assert!(
        api.contains(&routes::ADMIN_SETTINGS_SAVE) && api.contains(&routes::ADMIN_RETRY),
        "{api:?}"
    );
    assert!(!api.contains(&routes::ADMIN_PAGE));
    let key = check_ui_module(
        "confluence:globalSettings",
        Function::Admin,
        &api,
        "the admin API knows its caller by the user's token and asks Confluence, as the app \
         (system token), whether that caller is a site admin",
    );
    assert_eq!(key, "admin-api", "the admin page's own endpoint");
}

#[test]
fn the_forge_app_adopts_the_connect_app_and_calls_the_same_backend() {
    let manifest = manifest();
    let descriptor = load_descriptor().unwrap();
    let template = template();

    let connect_key = text(&manifest, &["app", "connect", "key"]).expect("app.connect.key");
    assert_eq!(Some(connect_key), descriptor["key"].as_str());
    let app_key_default = template
        .doc()
        .get("Parameters")
        .and_then(|p| p.get("AppKey"))
        .and_then(|p| p.get("Default"))
        .and_then(scalar);
    assert_eq!(app_key_default.as_deref(), Some(connect_key));

    let remotes = manifest
        .get("remotes")
        .and_then(Value::as_sequence)
        .unwrap();
    assert_eq!(remotes.len(), 1, "one backend, one remote");
    let remote_key = text(&remotes[0], &["key"]).unwrap();
    let operations: Vec<String> = remotes[0]
        .get("operations")
        .and_then(Value::as_sequence)
        .map(|ops| ops.iter().filter_map(scalar).collect())
        .unwrap_or_default();
    assert!(
        operations.iter().any(|o| o == "compute"),
        "Atlassian's remotes reference: `compute` is required for invokeRemote ({operations:?})"
    );
    let base_url = text(&remotes[0], &["baseUrl"]).expect("remotes[0].baseUrl as one URL");
    assert_eq!(
        text(&manifest, &["app", "connect", "remote"]),
        Some(remote_key)
    );
    for e in manifest_endpoints(&manifest) {
        assert_eq!(
            e.remote.as_deref(),
            Some(remote_key),
            "endpoint `{}`",
            e.key
        );
    }
    assert_eq!(
        Some(base_url),
        descriptor["baseUrl"].as_str(),
        "the remote's baseUrl and the Connect descriptor's baseUrl are the same backend"
    );

    // The stack accepts the manifest's values as its settings: the base URL as APP_BASE_URL and
    // the app id (after `forge register`, the real one) as FORGE_APP_ID.
    let app_id = text(&manifest, &["app", "id"]).unwrap();
    let config = AppConfig::from_lookup(|name| match name {
        "APP_BASE_URL" => Some(base_url.to_owned()),
        "FORGE_APP_ID" => Some(app_id.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("the stack refuses the manifest's values: {e}"));
    assert_eq!(config.base_path(), "", "the remote's baseUrl has no path");
    let forge = config
        .forge
        .expect("FORGE_APP_ID set turns the Forge door on");
    assert_eq!(forge.app_id.as_str(), app_id);
}

#[test]
fn forge_parameters_feed_the_forge_variables_and_leave_the_door_off_by_default() {
    let template = template();
    let params = template.doc().get("Parameters").unwrap();
    let conditions = template.doc().get("Conditions").unwrap();
    for (variable, parameter) in [
        ("FORGE_APP_ID", "ForgeAppId"),
        ("FORGE_JWKS_URL", "ForgeJwksUrl"),
        ("FORGE_API_HOSTS", "ForgeApiHosts"),
        ("FORGE_GRAPHQL_URL", "ForgeGraphqlUrl"),
    ] {
        let default = params
            .get(parameter)
            .and_then(|p| p.get("Default"))
            .and_then(scalar);
        assert_eq!(
            default.as_deref(),
            Some(""),
            "{parameter} defaults to empty"
        );
        // Which function reads which variable is checked by
        // every_function_environment_is_exactly_what_its_code_reads; here, how each is set.
        let setting: Vec<_> = template
            .functions()
            .into_iter()
            .filter(|f| f.env_value(variable).is_some())
            .collect();
        assert!(!setting.is_empty(), "no function is given {variable}");
        if variable == "FORGE_APP_ID" {
            assert_eq!(
                setting.len(),
                template.functions().len(),
                "every function reads FORGE_APP_ID (AppConfig)"
            );
        }
        for f in setting {
            let value = f.env_value(variable).unwrap();
            // `!If [HasX, !Ref X, !Ref AWS::NoValue]`: empty leaves the variable unset.
            let (name, args) = intrinsic(value).unwrap();
            let args = args.as_sequence().unwrap();
            assert_eq!(name, "Fn::If", "{}: {variable}", f.logical_id);
            assert_eq!(ref_target(&args[1]), Some(parameter));
            assert_eq!(ref_target(&args[2]), Some("AWS::NoValue"));
            let condition = conditions
                .get(scalar(&args[0]).unwrap().as_str())
                .unwrap_or_else(|| panic!("no condition for {variable}"));
            let condition = serde_yaml::to_string(condition).unwrap();
            assert!(
                condition.contains("Not") && condition.contains(parameter),
                "{variable}'s condition is `{parameter}` not empty: {condition}"
            );
        }
    }
    // With every Forge parameter empty the stack reads no Forge setting: the door is off.
    let config = AppConfig::from_lookup(|name| {
        (name == "APP_BASE_URL").then(|| "https://app.example.com".to_owned())
    })
    .unwrap();
    assert!(config.forge.is_none());
}
