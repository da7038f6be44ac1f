//! template.yaml, checked offline against the files and the code it must agree with: the route
//! table (`understudy_web::routes`) and the descriptor (routes), the variables each function's
//! settings read (environment), the functions that `cargo metadata` finds under `functions/`, the
//! store's schema and encryption context, and the sizing rules in the README ("Sizing"). cfn-lint
//! (run by tests/run.sh) checks the rest.

// Helpers of a test file may fail the test the short way, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use deployment_tests::{
    Function, Route, Template, descriptor_routes, environment_mismatch, function_binaries, get_att,
    intrinsic, load_descriptor, load_manifest, manifest_routes, number, ref_target, scalar,
    workspace_root,
};
use serde_yaml::Value;
use understudy_web::env::Variables;
use understudy_web::{deployed, routes};

/// What each deployed binary reads from its environment, found by running its settings' reader
/// with nothing set ([`understudy_web::deployed::variables`]): the list comes from the code that reads.
/// Every binary that `cargo metadata` finds under `functions/` must have its entry here
/// (`the_environment_table_covers_every_built_function`).
fn code_env() -> BTreeMap<&'static str, Variables> {
    BTreeMap::from([
        (
            "lifecycle",
            deployed::variables::<understudy_lifecycle::LifecycleConfig>(),
        ),
        (
            "webhooks",
            deployed::variables::<understudy_webhooks::WebhooksConfig>(),
        ),
        (
            "edit-worker",
            deployed::variables::<understudy_edits::WorkerConfig>(),
        ),
        (
            "edit-api",
            deployed::variables::<understudy_edits::ApiConfig>(),
        ),
        (
            "admin-api",
            deployed::variables::<understudy_admin::AdminConfig>(),
        ),
        (
            "privacy",
            deployed::variables::<understudy_privacy::PrivacyConfig>(),
        ),
    ])
}

/// The deployed functions, from `cargo metadata`: binary → package.
fn built_functions() -> BTreeMap<String, String> {
    let built = function_binaries().unwrap();
    assert!(
        built.contains_key("lifecycle"),
        "cargo metadata lists no lifecycle binary under functions/: {built:?}"
    );
    built
}

/// The routes of the route table that one binary serves.
fn table_routes(binary: &str) -> BTreeSet<Route> {
    routes::ROUTES
        .iter()
        .filter(|r| r.function.binary() == binary)
        .map(|r| Route::new(r.method, r.path))
        .collect()
}

fn template() -> Template {
    Template::load().expect("template.yaml loads")
}

fn function(template: &Template, binary: &str) -> Function {
    template
        .function_for_binary(binary)
        .unwrap_or_else(|| panic!("template.yaml has no function with Binary: {binary}"))
}

fn set_diff<T: Ord + Clone + std::fmt::Display>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> String {
    a.difference(b)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn each_function_has_exactly_the_http_api_events_of_its_routes_in_the_route_table() {
    let template = template();
    let mut declared = BTreeSet::new();
    for f in template.functions() {
        let binary = f.binary().unwrap_or_default();
        let events: BTreeSet<Route> = f.http_routes().into_iter().collect();
        for route in &events {
            assert!(
                declared.insert(route.clone()),
                "{route} is declared twice in template.yaml"
            );
        }
        let table = table_routes(binary);
        assert_eq!(
            events,
            table,
            "\n{binary}: in the route table but not an HttpApi event: [{}]\n{binary}: an HttpApi \
             event the route table does not give it: [{}]",
            set_diff(&table, &events),
            set_diff(&events, &table)
        );
    }
    for served in routes::Function::ALL {
        function(&template, served.binary());
    }
}

#[test]
fn every_descriptor_url_is_in_the_route_table_and_the_rest_is_the_apps_own_api_or_forges() {
    let descriptor = load_descriptor().unwrap();
    let from_descriptor: BTreeSet<Route> = descriptor_routes(&descriptor).into_keys().collect();
    // The Forge front door's routes are named by descriptor/manifest.yml (tests/forge_manifest.rs).
    let from_manifest: BTreeSet<Route> = manifest_routes(&load_manifest().unwrap())
        .into_keys()
        .collect();
    assert!(
        from_descriptor.contains(&Route::new("POST", "/installed")),
        "the descriptor parsed to no lifecycle routes: {from_descriptor:?}"
    );
    let table: BTreeSet<Route> = routes::ROUTES
        .iter()
        .map(|r| Route::new(r.method, r.path))
        .collect();
    assert!(
        from_descriptor.is_subset(&table),
        "in the descriptor but not in the route table: [{}]",
        set_diff(&from_descriptor, &table)
    );
    // What the descriptor does not name is the API the app's own iframe calls, with a context JWT
    // (or, from the Forge app, with a Forge Invocation Token), or a Forge trigger's endpoint.
    for route in table.difference(&from_descriptor) {
        assert!(
            route.path.starts_with("/api/") || from_manifest.contains(route),
            "{route} is in the route table, but neither in the descriptor, nor an endpoint of \
             descriptor/manifest.yml, nor under /api/"
        );
    }
}

#[test]
fn http_events_use_one_http_api_on_the_default_stage_with_no_catch_all() {
    let template = template();
    let apis = template.resources_of_type("AWS::Serverless::HttpApi");
    assert_eq!(apis.len(), 1, "one HTTP API, found {apis:?}");
    let api = &apis[0];
    let stage = template
        .properties(api)
        .and_then(|p| p.get("StageName"))
        .and_then(scalar);
    // No stage name also means `$default` in SAM; either way the path a function sees is the
    // path Confluence signed, with no stage prefix.
    assert!(
        stage.is_none() || stage.as_deref() == Some("$default"),
        "stage must be $default, not {stage:?}"
    );
    for f in template.functions() {
        for (name, event) in f.events_of_type("HttpApi") {
            let props = event.get("Properties").unwrap();
            assert_eq!(
                props.get("ApiId").and_then(ref_target),
                Some(api.as_str()),
                "{}.{name} must name ApiId: !Ref {api}",
                f.logical_id
            );
            let route = &f.http_routes();
            for r in route {
                assert!(
                    r.method != "ANY" && !r.path.contains('+') && r.path != "$default",
                    "{}.{name}: no catch-all routes ({r})",
                    f.logical_id
                );
            }
        }
    }
}

#[test]
fn every_function_environment_is_exactly_what_its_code_reads() {
    let template = template();
    let code = code_env();
    for binary in built_functions().keys() {
        let Some(vars) = code.get(binary.as_str()) else {
            panic!("`{binary}` is built but its settings are not in code_env()");
        };
        // Reading nothing at all is a reader that was never called.
        assert!(vars.read.contains("APP_KEY"), "{binary}: {vars:?}");
        let f = function(&template, binary);
        if let Some(problem) = environment_mismatch(&vars.read, &vars.required, &f.env_names()) {
            panic!("{binary} ({}): {problem}", f.logical_id);
        }
    }
}

#[test]
fn the_environment_table_covers_every_built_function() {
    let built = built_functions();
    let code = code_env();
    let template = template();
    for (binary, package) in &built {
        assert!(
            code.contains_key(binary.as_str()),
            "package {package} builds `{binary}`: add its settings' variables to code_env() in \
             tests/deployment/tests/deployment.rs (and the package to its dev-dependencies)"
        );
        assert!(
            template.function_for_binary(binary).is_some(),
            "package {package} builds `{binary}` under functions/, but no function of template.yaml \
             runs it (Metadata.BuildProperties.Binary)"
        );
    }
    for binary in code.keys() {
        assert!(
            built.contains_key(*binary),
            "code_env() names `{binary}`, which no package under functions/ builds"
        );
    }
}

#[test]
fn functions_read_their_environment_only_through_their_settings() {
    // A direct read would escape the list that the deployment checks.
    let functions = workspace_root().join("functions");
    let mut offenders = Vec::new();
    let mut stack = vec![functions.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // The local app is not deployed; target/ directories hold no source.
                if path != functions.join("local") && !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.components().any(|c| c.as_os_str() == "src")
            {
                let source = std::fs::read_to_string(&path).unwrap();
                if source.contains("env::var(") || source.contains("env::vars(") {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these read the environment directly, not through their settings (FromEnv): {offenders:?}"
    );
}

#[test]
fn local_only_variables_are_never_deployed() {
    let keys = template().all_keys();
    for name in [
        // Lets tenants and the OAuth server use plain http on loopback: local runs only.
        "CONFLUENCE_ALLOW_HTTP_LOOPBACK",
        // Would send the SDK's DynamoDB/SQS/KMS calls elsewhere.
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_KMS",
    ] {
        assert!(!keys.contains(name), "template.yaml must not set {name}");
    }
}

#[test]
fn functions_are_arm64_rust_binaries_built_by_cargo_lambda_with_json_logs() {
    let template = template();
    let functions = template.functions();
    let binaries: BTreeSet<&str> = functions.iter().filter_map(Function::binary).collect();
    let built = built_functions();
    assert_eq!(
        binaries,
        built.keys().map(String::as_str).collect(),
        "one function per binary built under functions/"
    );
    assert_eq!(functions.len(), built.len());
    for f in &functions {
        let id = &f.logical_id;
        let text = |name: &str| f.property(name).and_then(scalar);
        assert_eq!(text("Runtime").as_deref(), Some("provided.al2023"), "{id}");
        assert_eq!(text("Handler").as_deref(), Some("bootstrap"), "{id}");
        let archs: Vec<String> = f
            .property("Architectures")
            .and_then(Value::as_sequence)
            .map(|a| a.iter().filter_map(scalar).collect())
            .unwrap_or_default();
        assert_eq!(archs, ["arm64"], "{id}");
        assert_eq!(f.build_method(), Some("rust-cargolambda"), "{id}");
        assert_eq!(
            f.property("LoggingConfig")
                .and_then(|l| l.get("LogFormat"))
                .and_then(scalar)
                .as_deref(),
            Some("JSON"),
            "{id}"
        );
        let binary = f.binary().unwrap_or_default();
        assert!(
            built.contains_key(binary),
            "{id}: no workspace crate builds the binary {binary}"
        );
    }
}

#[test]
fn the_edit_queue_fits_the_worker_and_has_a_dead_letter_queue() {
    let template = template();
    let worker = function(&template, "edit-worker");
    let sqs = worker.events_of_type("SQS");
    assert_eq!(sqs.len(), 1, "the worker reads one queue");
    let props = sqs[0].1.get("Properties").unwrap();
    let (queue, attr) = get_att(props.get("Queue").unwrap()).unwrap();
    assert_eq!(attr, "Arn");
    let types: Vec<String> = props
        .get("FunctionResponseTypes")
        .and_then(Value::as_sequence)
        .map(|t| t.iter().filter_map(scalar).collect())
        .unwrap_or_default();
    assert_eq!(types, ["ReportBatchItemFailures"]);
    let batch = props.get("BatchSize").and_then(number).unwrap_or(10);

    let queue_props = template.properties(&queue).unwrap();
    assert_eq!(
        queue_props.get("FifoQueue").and_then(Value::as_bool),
        Some(true)
    );
    let timeout = worker.timeout().unwrap();
    let visibility = queue_props
        .get("VisibilityTimeout")
        .and_then(number)
        .unwrap();
    assert!(
        visibility >= 6 * timeout,
        "AWS: visibility timeout ({visibility} s) at least 6 x the function timeout ({timeout} s)"
    );
    let redrive = queue_props.get("RedrivePolicy").unwrap();
    let max_receives = redrive.get("maxReceiveCount").and_then(number).unwrap_or(0);
    assert!(max_receives >= 1);
    assert_eq!(
        worker.env_value("EDIT_MAX_RECEIVES").and_then(number),
        Some(max_receives),
        "the worker's EDIT_MAX_RECEIVES is the queue's maxReceiveCount"
    );
    let (dlq, _) = get_att(redrive.get("deadLetterTargetArn").unwrap()).unwrap();
    assert_eq!(
        template
            .properties(&dlq)
            .and_then(|p| p.get("FifoQueue"))
            .and_then(Value::as_bool),
        Some(true),
        "a FIFO queue's dead-letter queue is FIFO"
    );

    // Timeout budget: per message, up to five Confluence or OAuth calls (token, read, write, and
    // a stale-version re-read and re-write), each bounded by the retry deadline.
    let deadline = worker
        .env_value("CONFLUENCE_RETRY_DEADLINE_SECONDS")
        .and_then(number)
        .unwrap();
    assert!(
        timeout >= batch * 5 * deadline,
        "worker timeout {timeout} s < {batch} message(s) x 5 calls x {deadline} s"
    );
    assert!(
        worker.property("ReservedConcurrentExecutions").is_some(),
        "the worker's reserved concurrency is the guard on Confluence's rate limits"
    );
}

#[test]
fn http_functions_answer_within_api_gateways_30_seconds() {
    let template = template();
    for binary in routes::Function::ALL.map(routes::Function::binary) {
        let f = function(&template, binary);
        let timeout = f.timeout().unwrap();
        assert!(
            timeout < 30,
            "{binary}: timeout {timeout} s; HTTP API gives up at 30 s"
        );
        if let Some(deadline) = f
            .env_value("CONFLUENCE_RETRY_DEADLINE_SECONDS")
            .and_then(number)
        {
            assert!(
                timeout >= 2 * deadline,
                "{binary}: a read and a write ({deadline} s each) must fit in {timeout} s"
            );
        }
    }
}

/// The actions a function's role allows, and the statements themselves.
fn allowed_actions(template: &Template, f: &Function) -> BTreeSet<String> {
    let (role, _) = get_att(
        f.property("Role")
            .unwrap_or_else(|| panic!("{} needs its own Role", f.logical_id)),
    )
    .unwrap();
    assert!(
        f.property("Policies").is_none(),
        "{}: with an explicit Role, SAM Policies are ignored",
        f.logical_id
    );
    let mut actions = BTreeSet::new();
    for s in template.role_statements(&role) {
        assert_eq!(s.effect, "Allow");
        for action in &s.actions {
            assert!(
                !action.contains('*'),
                "{role}: no wildcard actions ({action})"
            );
            actions.insert(action.clone());
        }
        for resource in &s.resources {
            assert!(
                scalar(resource).as_deref() != Some("*"),
                "{role}: no Resource \"*\""
            );
        }
    }
    actions
}

#[test]
fn each_role_allows_only_what_its_function_needs() {
    let template = template();
    let logs = ["logs:CreateLogStream", "logs:PutLogEvents"];
    let expected: [(&str, &[&str]); 6] = [
        (
            "lifecycle",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "dynamodb:BatchWriteItem",
                "kms:GenerateDataKey",
                "kms:Decrypt",
            ],
        ),
        (
            "webhooks",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                // A Forge event records its installation: a conditional update of the system
                // token, sealed, and a query of the installation with its link.
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "kms:GenerateDataKey",
                "kms:Decrypt",
                "sqs:SendMessage",
            ],
        ),
        (
            "edit-worker",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                // A job that now succeeds takes its page off the parked list (ParkedJobs::unpark).
                "dynamodb:DeleteItem",
                // Listing an audited account is a transaction that checks it was not closed.
                "dynamodb:ConditionCheckItem",
                "kms:GenerateDataKey",
                "kms:Decrypt",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ],
        ),
        (
            "edit-api",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                // Listing an audited account is a transaction that checks it was not closed.
                "dynamodb:ConditionCheckItem",
                "kms:GenerateDataKey",
                "kms:Decrypt",
            ],
        ),
        (
            "admin-api",
            &[
                // Tenants, settings, parked jobs and cached tokens; marks of retried jobs; settings,
                // per-user call limits and Forge installations; audit and parked listings (on the
                // index too) and installations; unpark a retried job and release a refused mark.
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "dynamodb:DeleteItem",
                "kms:GenerateDataKey",
                "kms:Decrypt",
                // "Retry now", and the queue's depth.
                "sqs:SendMessage",
                "sqs:GetQueueAttributes",
            ],
        ),
        (
            "privacy",
            &[
                // Tenants and installations; the schedule, accounts, audit, parked jobs and a
                // purge's items; report marks, closes and erased audit records; a closed
                // account's listing, tokens and parked jobs; a purge. Nothing sealed.
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:BatchWriteItem",
                "kms:Decrypt",
            ],
        ),
    ];
    for (binary, needs) in expected {
        let f = function(&template, binary);
        let allowed = allowed_actions(&template, &f);
        let wanted: BTreeSet<String> = needs
            .iter()
            .chain(logs.iter())
            .map(|a| (*a).to_owned())
            .collect();
        assert_eq!(
            allowed,
            wanted,
            "\n{binary} may not: [{}]\n{binary} lacks: [{}]",
            set_diff(&allowed, &wanted),
            set_diff(&wanted, &allowed)
        );
    }
}

/// The store's KMS encryption context value, read from its source.
fn store_encryption_context() -> String {
    let path = workspace_root().join("shared/store/src/crypto/kms.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let line = source
        .lines()
        .find(|l| l.trim_start().starts_with("const CONTEXT_VALUE"))
        .expect("shared/store/src/crypto/kms.rs defines CONTEXT_VALUE");
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn key_use_is_bound_to_the_stores_encryption_context_and_resources_are_this_stacks() {
    let template = template();
    let context = store_encryption_context();
    let key_id = "SecretsKey";
    assert_eq!(template.resource_type(key_id), Some("AWS::KMS::Key"));
    for f in template.functions() {
        assert_eq!(
            f.env_value("KMS_KEY_ID").and_then(get_att),
            Some((key_id.to_owned(), "Arn".to_owned())),
            "{}: KMS_KEY_ID",
            f.logical_id
        );
        assert_eq!(
            f.env_value("TABLE_NAME").and_then(ref_target),
            Some("Table"),
            "{}: TABLE_NAME",
            f.logical_id
        );
        let (role, _) = get_att(f.property("Role").unwrap()).unwrap();
        for s in template.role_statements(&role) {
            let service = s.actions[0].split(':').next().unwrap().to_owned();
            for resource in &s.resources {
                let target = get_att(resource)
                    .map(|(id, _)| id)
                    .or_else(|| sub_target(resource));
                let expected = match service.as_str() {
                    "kms" => key_id,
                    "dynamodb" => "Table",
                    "sqs" => "EditQueue",
                    "logs" => continue,
                    other => panic!("{role}: unexpected service {other}"),
                };
                assert_eq!(target.as_deref(), Some(expected), "{role}: {resource:?}");
            }
            if service == "kms" {
                let condition = s
                    .condition
                    .as_ref()
                    .and_then(|c| c.get("StringEquals"))
                    .and_then(|c| c.get("kms:EncryptionContext:purpose"))
                    .and_then(scalar);
                assert_eq!(
                    condition.as_deref(),
                    Some(context.as_str()),
                    "{role}: KMS use bound to the store's encryption context"
                );
            }
        }
    }
}

/// The resource of `!Sub "${Table.Arn}/index/*"`.
fn sub_target(value: &Value) -> Option<String> {
    let (name, inner) = intrinsic(value)?;
    if name != "Fn::Sub" {
        return None;
    }
    let text = scalar(inner)?;
    let start = text.find("${")? + 2;
    let end = text[start..].find(['.', '}'])? + start;
    Some(text[start..end].to_owned())
}

#[test]
fn the_table_has_the_store_schema_ttl_recovery_and_encryption() {
    // shared/store/src/lib.rs, "DynamoDB table".
    let template = template();
    assert_eq!(
        template.resource_type("Table"),
        Some("AWS::DynamoDB::Table")
    );
    let table = template.properties("Table").unwrap();
    let text = |v: &Value, k: &str| v.get(k).and_then(scalar);
    assert_eq!(
        text(table, "BillingMode").as_deref(),
        Some("PAY_PER_REQUEST")
    );
    let keys = |schema: &Value| -> Vec<(String, String)> {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    text(k, "AttributeName").unwrap(),
                    text(k, "KeyType").unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        keys(table.get("KeySchema").unwrap()),
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    let gsis = table
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .unwrap();
    assert_eq!(gsis.len(), 1);
    assert_eq!(text(&gsis[0], "IndexName").as_deref(), Some("gsi1"));
    assert_eq!(
        keys(gsis[0].get("KeySchema").unwrap()),
        [
            ("gsi1pk".into(), "HASH".into()),
            ("gsi1sk".into(), "RANGE".into())
        ]
    );
    assert_eq!(
        gsis[0]
            .get("Projection")
            .and_then(|p| text(p, "ProjectionType"))
            .as_deref(),
        Some("ALL")
    );
    let attributes: BTreeMap<String, String> = table
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .map(|a| {
            (
                text(a, "AttributeName").unwrap(),
                text(a, "AttributeType").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attributes,
        ["pk", "sk", "gsi1pk", "gsi1sk"]
            .map(|n| (n.to_owned(), "S".to_owned()))
            .into_iter()
            .collect()
    );
    let ttl = table.get("TimeToLiveSpecification").unwrap();
    assert_eq!(text(ttl, "AttributeName").as_deref(), Some("expires_at"));
    assert_eq!(text(ttl, "Enabled").as_deref(), Some("true"));
    assert_eq!(
        table
            .get("PointInTimeRecoverySpecification")
            .and_then(|p| text(p, "PointInTimeRecoveryEnabled"))
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        table
            .get("SSESpecification")
            .and_then(|p| text(p, "SSEEnabled"))
            .as_deref(),
        Some("true")
    );
}

#[test]
fn alarms_watch_the_dead_letter_queue_and_every_function() {
    let template = template();
    let alarms = template.resources_of_type("AWS::CloudWatch::Alarm");
    let dimension_targets = |alarm: &str, name: &str| -> Vec<Value> {
        template
            .properties(alarm)
            .and_then(|p| p.get("Dimensions"))
            .and_then(Value::as_sequence)
            .map(|ds| {
                ds.iter()
                    .filter(|d| d.get("Name").and_then(scalar).as_deref() == Some(name))
                    .filter_map(|d| d.get("Value").cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for alarm in &alarms {
        assert!(
            template
                .properties(alarm)
                .and_then(|p| p.get("AlarmActions"))
                .is_some(),
            "{alarm} notifies no one"
        );
    }
    let worker = function(&template, "edit-worker");
    let (queue, _) = get_att(
        worker.events_of_type("SQS")[0]
            .1
            .get("Properties")
            .and_then(|p| p.get("Queue"))
            .unwrap(),
    )
    .unwrap();
    let (dlq, _) = get_att(
        template
            .properties(&queue)
            .and_then(|p| p.get("RedrivePolicy"))
            .and_then(|r| r.get("deadLetterTargetArn"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        alarms.iter().any(|a| {
            dimension_targets(a, "QueueName")
                .iter()
                .any(|v| get_att(v).map(|(id, _)| id).as_deref() == Some(dlq.as_str()))
        }),
        "no alarm on the dead-letter queue {dlq}"
    );
    for f in template.functions() {
        let watched = alarms.iter().any(|a| {
            template
                .properties(a)
                .and_then(|p| p.get("MetricName"))
                .and_then(scalar)
                .as_deref()
                == Some("Errors")
                && dimension_targets(a, "FunctionName")
                    .iter()
                    .any(|v| ref_target(v) == Some(f.logical_id.as_str()))
        });
        assert!(watched, "no Errors alarm on {}", f.logical_id);
    }
}

#[test]
fn parameters_feed_the_config_and_outputs_give_the_descriptor_url() {
    let template = template();
    let params = template.doc().get("Parameters").unwrap();
    for name in [
        "AppKey",
        "PublicBaseUrl",
        "DomainName",
        "CertificateArn",
        "AllowedTenantHosts",
    ] {
        assert!(params.get(name).is_some(), "parameter {name}");
    }
    let lifecycle = function(&template, "lifecycle");
    assert_eq!(
        lifecycle.env_value("APP_KEY").and_then(ref_target),
        Some("AppKey")
    );
    assert_eq!(
        lifecycle
            .env_value("ALLOWED_TENANT_HOSTS")
            .and_then(ref_target),
        Some("AllowedTenantHosts")
    );
    let base_url = serde_yaml::to_string(lifecycle.env_value("APP_BASE_URL").unwrap()).unwrap();
    assert!(
        base_url.contains("PublicBaseUrl") && base_url.contains("DomainName"),
        "APP_BASE_URL comes from PublicBaseUrl or DomainName: {base_url}"
    );
    let outputs = template.doc().get("Outputs").unwrap();
    let descriptor_url = serde_yaml::to_string(outputs.get("DescriptorUrl").unwrap()).unwrap();
    assert!(
        descriptor_url.contains("/atlassian-connect.json"),
        "{descriptor_url}"
    );
}

#[test]
fn the_privacy_run_is_scheduled_every_hour_one_at_a_time_and_off_the_hour() {
    let template = template();
    let f = function(&template, "privacy");
    let schedules = f.events_of_type("Schedule");
    assert_eq!(schedules.len(), 1, "one EventBridge schedule");
    let expression = schedules[0]
        .1
        .get("Properties")
        .and_then(|p| p.get("Schedule"))
        .and_then(scalar)
        .unwrap();
    // cron(<minute> * * * ? *): every hour (the slot of each hour is a 24th of the tenants),
    // at a minute other than 0.
    let fields: Vec<&str> = expression
        .strip_prefix("cron(")
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{expression}: a cron expression"))
        .split(' ')
        .collect();
    assert_eq!(fields[1..], ["*", "*", "*", "?", "*"], "{expression}");
    let minute: u32 = fields[0].parse().unwrap();
    assert!((1..60).contains(&minute), "{expression}: off the hour");
    assert!(
        f.events_of_type("HttpApi").is_empty(),
        "the privacy run has no route"
    );
    assert_eq!(
        f.property("ReservedConcurrentExecutions").and_then(number),
        Some(1),
        "two runs at once would report the same accounts twice"
    );
    assert!(f.timeout().unwrap() > 60);
}
