//! template.yaml, checked offline against the files it must agree with: the descriptor (routes),
//! each function crate's `ENV_VARS` (environment), the store's schema and encryption context, and
//! the sizing rules in docs/deployment.md. cfn-lint (run by tests/run.sh) checks the rest.

// Helpers of a test file may fail the test the short way, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use deployment_tests::{
    Function, Route, RouteKind, Template, descriptor_routes, get_att, intrinsic, load_descriptor,
    number, ref_target, scalar, workspace_binaries, workspace_root,
};
use serde_yaml::Value;

/// The app's own API, called by its iframe with a context JWT; not in the descriptor.
const APP_API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/pages/{pageId}/edits"),
    ("GET", "/api/pages/{pageId}/audit"),
];

/// The four Lambda binaries (issue #8) and the crates that build them.
const BINARIES: &[&str] = &["lifecycle", "webhooks", "edit-worker", "edit-api"];

/// What each binary reads from its environment, as its crate declares it. A binary that a
/// workspace crate builds must be listed here (`the_environment_table_covers_every_built_function`).
fn declared_env() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("lifecycle", understudy_lifecycle::ENV_VARS),
        ("webhooks", understudy_webhooks::ENV_VARS),
        ("edit-worker", understudy_edits::WORKER_ENV_VARS),
        ("edit-api", understudy_edits::API_ENV_VARS),
    ])
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
fn every_descriptor_route_is_an_http_api_event_and_every_event_is_in_the_descriptor_or_the_api() {
    let descriptor = load_descriptor().unwrap();
    let mut expected: BTreeSet<Route> = descriptor_routes(&descriptor).into_keys().collect();
    expected.extend(APP_API_ROUTES.iter().map(|(m, p)| Route::new(m, p)));

    let template = template();
    let mut declared = BTreeSet::new();
    for f in template.functions() {
        for route in f.http_routes() {
            assert!(
                declared.insert(route.clone()),
                "{route} is declared twice in template.yaml"
            );
        }
    }
    assert!(
        expected.contains(&Route::new("POST", "/installed")),
        "the descriptor parsed to no lifecycle routes: {expected:?}"
    );
    assert_eq!(
        declared,
        expected,
        "\nin the descriptor or the app API but not routed: [{}]\nrouted but in neither: [{}]",
        set_diff(&expected, &declared),
        set_diff(&declared, &expected)
    );
}

#[test]
fn each_route_reaches_the_function_that_serves_it() {
    let template = template();
    let descriptor = load_descriptor().unwrap();
    let owner = |kind: RouteKind| match kind {
        RouteKind::Descriptor | RouteKind::Lifecycle => "lifecycle",
        RouteKind::Webhook => "webhooks",
        RouteKind::ModulePage => "edit-api",
    };
    let mut wanted: Vec<(Route, &str)> = descriptor_routes(&descriptor)
        .into_iter()
        .map(|(route, kind)| (route, owner(kind)))
        .collect();
    wanted.extend(
        APP_API_ROUTES
            .iter()
            .map(|(m, p)| (Route::new(m, p), "edit-api")),
    );
    for (route, binary) in wanted {
        let f = function(&template, binary);
        assert!(
            f.http_routes().contains(&route),
            "{route} must be an HttpApi event of {} (binary {binary})",
            f.logical_id
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
    let declared = declared_env();
    assert_eq!(
        declared.len(),
        BINARIES.len(),
        "every function's env is checked"
    );
    for (binary, names) in &declared {
        let f = function(&template, binary);
        let code: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let set = f.env_names();
        assert_eq!(
            set,
            code,
            "\n{binary}: read by the code but not set in template.yaml: [{}]\n{binary}: set in template.yaml but never read: [{}]",
            set_diff(&code, &set),
            set_diff(&set, &code)
        );
    }
}

#[test]
fn the_environment_table_covers_every_built_function() {
    let built = workspace_binaries().unwrap();
    let declared = declared_env();
    assert!(
        built.contains_key("lifecycle"),
        "cargo metadata lists no lifecycle binary: {built:?}"
    );
    for binary in BINARIES {
        match (built.get(*binary), declared.contains_key(binary)) {
            (Some(package), false) => panic!(
                "package {package} builds `{binary}`: add its ENV_VARS to declared_env() in \
                 tests/deployment/tests/deployment.rs (and the package to its dev-dependencies)"
            ),
            (None, false) => {
                eprintln!("note: no crate builds `{binary}` yet; its env is unchecked")
            }
            _ => {}
        }
    }
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
    assert_eq!(
        binaries,
        BINARIES.iter().copied().collect(),
        "one function per binary"
    );
    assert_eq!(functions.len(), BINARIES.len());
    let built = workspace_binaries().unwrap();
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
    for binary in ["lifecycle", "webhooks", "edit-api"] {
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
    let expected: [(&str, &[&str]); 4] = [
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
                "kms:GenerateDataKey",
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
