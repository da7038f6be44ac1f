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
    Function, Route, Template, as_list, descriptor_routes, environment_mismatch, function_binaries,
    get_att, intrinsic, load_descriptor, load_manifest, manifest_routes, number, ref_target,
    scalar, target_id, workspace_root,
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
        // Lambda holds 4 KB of environment per function in all, so a rules document lives in
        // the table (`understudy-rules set`), read by the functions; only the local app reads
        // EDIT_RULES.
        "EDIT_RULES",
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
    let attempts = worker
        .env_value("EDIT_MAX_RECEIVES")
        .and_then(number)
        .unwrap();
    // The worker dead-letters after its own count of failed attempts; SQS's redrive is a
    // backstop that must not come first, though receives also count a site's waits for its share.
    assert!(
        max_receives >= 5 * attempts,
        "maxReceiveCount {max_receives} leaves too little room above EDIT_MAX_RECEIVES {attempts}"
    );
    assert!(
        worker.env_value("EDIT_QUEUE_URL").is_some(),
        "the worker sets its messages' next delivery on the edit queue"
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
    // High-throughput FIFO on both: de-duplication and the throughput limit per message group
    // (one per tenant and page), so a burst is not held to 300 sends a second for the whole
    // queue, and the order per page is kept.
    for id in [&queue, &dlq] {
        let props = template.properties(id).unwrap();
        let text = |name: &str| props.get(name).and_then(scalar);
        assert_eq!(
            text("DeduplicationScope").as_deref(),
            Some("messageGroup"),
            "{id}: DeduplicationScope"
        );
        assert_eq!(
            text("FifoThroughputLimit").as_deref(),
            Some("perMessageGroupId"),
            "{id}: FifoThroughputLimit"
        );
    }
    // 14 days, the longest SQS keeps a message: a long outage delays edits, never expires them.
    let fourteen_days = 14 * 24 * 60 * 60;
    assert_eq!(
        queue_props.get("MessageRetentionPeriod").and_then(number),
        Some(fourteen_days),
        "{queue}: MessageRetentionPeriod"
    );
    assert_eq!(
        template
            .properties(&dlq)
            .and_then(|p| p.get("MessageRetentionPeriod"))
            .and_then(number),
        Some(fourteen_days),
        "{dlq}: MessageRetentionPeriod"
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

/// What each function's code calls (shared/store/src/dynamo/*.rs for the store's ports; the
/// function's own crate and the shared crates it builds on for which ports it uses): the actions,
/// each with why, and whether it lists anything on the index (`gsi1`: a page's audit records,
/// the parked jobs).
struct Needs {
    binary: &'static str,
    index: bool,
    actions: &'static [&'static str],
}

const NEEDS: [Needs; 6] = [
    Needs {
        binary: "lifecycle",
        // Lists neither audit records nor parked jobs.
        index: false,
        actions: &[
            // The tenant a callback's secret signs; a Forge installation's link.
            "dynamodb:GetItem",
            // The install (conditional), its schedule entry; a Forge installation first seen
            // and its link to a Connect tenant.
            "dynamodb:PutItem",
            // enabled/disabled/uninstalled, the settings' retention, a newer system token.
            "dynamodb:UpdateItem",
            // A re-install or an uninstall drops the tenant's cached tokens: a Query of its
            // partition, then BatchWriteItem deletes.
            "dynamodb:Query",
            "dynamodb:BatchWriteItem",
            // Seals a new shared secret or system token; opens one to verify a callback.
            "kms:GenerateDataKey",
            "kms:Decrypt",
        ],
    },
    Needs {
        binary: "webhooks",
        index: false,
        actions: &[
            // The tenant, its settings, a Forge installation's link.
            "dynamodb:GetItem",
            // The de-duplication mark; a Forge installation first seen, its schedule entry.
            "dynamodb:PutItem",
            // The mark of an event the queue refused is released.
            "dynamodb:DeleteItem",
            // A Forge event records its installation: the conditional update that keeps only
            // the latest system token. (No Query: nothing here reads an installation back.)
            "dynamodb:UpdateItem",
            // Opens the tenant secret to verify a webhook; seals a Forge event's system token.
            "kms:GenerateDataKey",
            "kms:Decrypt",
            "sqs:SendMessage",
        ],
    },
    Needs {
        binary: "edit-worker",
        // Lists neither audit records nor parked jobs: no index.
        index: false,
        actions: &[
            // The tenant, a linked tenant, whether the user was reported closed, cached tokens.
            "dynamodb:GetItem",
            // Audit records, parked jobs, cached tokens; the Put of noting an account.
            "dynamodb:PutItem",
            // Noting the account an audit record or a parked job names is one
            // TransactWriteItems of a ConditionCheck, an Update and a Put. UpdateItem also counts
            // the tenant's jobs this minute (its share) and a job's failed attempts (an ADD).
            "dynamodb:UpdateItem",
            "dynamodb:ConditionCheckItem",
            // A Forge job reads its installation with its link: one Query of its partition.
            "dynamodb:Query",
            // A job that now succeeds takes its page off the parked list (ParkedJobs::unpark).
            "dynamodb:DeleteItem",
            // Opens tenant secrets, system tokens and cached tokens; seals new cached tokens.
            "kms:GenerateDataKey",
            "kms:Decrypt",
            // The event source mapping.
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            // A job that must wait is handed back for that long (per-tenant share, Confluence's
            // Retry-After), not for the whole visibility timeout.
            "sqs:ChangeMessageVisibility",
            // A job the worker gave up on is moved to the dead-letter queue at once.
            "sqs:SendMessage",
        ],
    },
    Needs {
        binary: "edit-api",
        // A page's audit records (the byline panel) are listed on the index.
        index: true,
        actions: &[
            // The tenant, a Forge installation's link and linked tenant, cached tokens.
            "dynamodb:GetItem",
            // Audit records, cached tokens, a Forge installation first seen and its schedule
            // entry; the Put of noting an account.
            "dynamodb:PutItem",
            // The per-user call limit (one atomic ADD); a Forge installation's newer system
            // token; the Update of noting an account.
            "dynamodb:UpdateItem",
            // Noting the account an edit's audit record names checks it was not closed.
            "dynamodb:ConditionCheckItem",
            // A page's audit records, on the index.
            "dynamodb:Query",
            // Opens tenant secrets and tokens; seals cached tokens and system tokens.
            "kms:GenerateDataKey",
            "kms:Decrypt",
        ],
    },
    Needs {
        binary: "admin-api",
        // A page's audit records and the parked jobs are listed on the index.
        index: true,
        actions: &[
            // Tenants, settings, a parked job, cached tokens, a Forge installation's link.
            "dynamodb:GetItem",
            // Marks of retried jobs, cached tokens, settings written first, a Forge
            // installation first seen and its schedule entry.
            "dynamodb:PutItem",
            // Settings, per-user call limits, a Forge installation's newer system token.
            "dynamodb:UpdateItem",
            // The tenant's audit records (table); a page's, and the parked jobs (index).
            "dynamodb:Query",
            // A retried job leaves the parked list; the mark of a job the queue refused.
            "dynamodb:DeleteItem",
            "kms:GenerateDataKey",
            "kms:Decrypt",
            // "Retry now", and the queue's depth.
            "sqs:SendMessage",
            "sqs:GetQueueAttributes",
        ],
    },
    Needs {
        binary: "privacy",
        // Erasing a closed account lists the tenant's parked jobs, on the index.
        index: true,
        actions: &[
            // Tenants; whether a purge left the schedule entry.
            "dynamodb:GetItem",
            // The schedule, a Forge installation, accounts, audit records, a purge's items
            // (table); parked jobs (index).
            "dynamodb:Query",
            // Report marks, closed accounts (a transaction of two updates), erased audit records.
            "dynamodb:UpdateItem",
            // A closed account's listing, tokens and parked jobs; a purge's last two items.
            "dynamodb:DeleteItem",
            // A purge after the retention.
            "dynamodb:BatchWriteItem",
            // Opens a tenant's secret (its report token) and a system token; seals nothing.
            "kms:Decrypt",
        ],
    },
];

#[test]
fn each_role_allows_only_what_its_function_needs() {
    let template = template();
    let logs = ["logs:CreateLogStream", "logs:PutLogEvents"];
    let built = built_functions();
    assert_eq!(
        NEEDS.iter().map(|n| n.binary).collect::<BTreeSet<_>>(),
        built.keys().map(String::as_str).collect(),
        "NEEDS names every deployed function once"
    );
    for needs in &NEEDS {
        let binary = needs.binary;
        let f = function(&template, binary);
        let allowed = allowed_actions(&template, &f);
        let wanted: BTreeSet<String> = needs
            .actions
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
        let (role, _) = get_att(f.property("Role").unwrap()).unwrap();
        let on_index = template.role_statements(&role).iter().any(|s| {
            s.resources
                .iter()
                .any(|r| scalar_of_sub(r).contains("/index/"))
        });
        assert_eq!(
            on_index, needs.index,
            "{binary}: access to the table's index only where the code lists on it"
        );
    }
}

/// The text of `!Sub "..."`.
fn scalar_of_sub(value: &Value) -> String {
    intrinsic(value)
        .filter(|(name, _)| name == "Fn::Sub")
        .and_then(|(_, inner)| scalar(inner))
        .unwrap_or_default()
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
                let expected: &[&str] = match service.as_str() {
                    "kms" => &[key_id],
                    "dynamodb" => &["Table"],
                    // Sending to the dead-letter queue: the worker's, and only that action.
                    "sqs" if s.actions == ["sqs:SendMessage"] && role == "EditWorkerRole" => {
                        &["EditDeadLetterQueue"]
                    }
                    "sqs" => &["EditQueue"],
                    "logs" => continue,
                    other => panic!("{role}: unexpected service {other}"),
                };
                assert!(
                    target.as_deref().is_some_and(|t| expected.contains(&t)),
                    "{role}: {resource:?}"
                );
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

/// The queue the worker reads and its dead-letter queue (logical ids).
fn edit_queues(template: &Template) -> (String, String) {
    let worker = function(template, "edit-worker");
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
    (queue, dlq)
}

/// The one HTTP API.
fn http_api(template: &Template) -> String {
    let apis = template.resources_of_type("AWS::Serverless::HttpApi");
    assert_eq!(apis.len(), 1, "one HTTP API, found {apis:?}");
    apis[0].clone()
}

/// The alarms watching `metric` of `namespace` whose `dimension` names `target`.
fn alarms_on(
    template: &Template,
    namespace: &str,
    metric: &str,
    dimension: &str,
    target: &str,
) -> Vec<String> {
    template
        .resources_of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|alarm| {
            template.alarm_metrics(alarm).iter().any(|m| {
                m.namespace_text().as_deref() == Some(namespace)
                    && m.name == metric
                    && m.dimension_target(dimension).as_deref() == Some(target)
            })
        })
        .collect()
}

/// The metric filters on a log group: (logical id, pattern, metric namespace, metric name).
fn metric_filters(template: &Template, log_group: &str) -> Vec<(String, String, Value, String)> {
    template
        .resources_of_type("AWS::Logs::MetricFilter")
        .into_iter()
        .filter_map(|id| {
            let props = template.properties(&id)?;
            if props.get("LogGroupName").and_then(target_id).as_deref() != Some(log_group) {
                return None;
            }
            let pattern = props.get("FilterPattern").and_then(scalar)?;
            let transformations = props.get("MetricTransformations")?.as_sequence()?;
            assert_eq!(transformations.len(), 1, "{id}: one metric");
            let metric = &transformations[0];
            Some((
                id.clone(),
                pattern,
                metric.get("MetricNamespace")?.clone(),
                metric.get("MetricName").and_then(scalar)?,
            ))
        })
        .collect()
}

/// Whether an alarm watches the metric a metric filter publishes.
fn alarmed(template: &Template, namespace: &Value, name: &str) -> bool {
    template
        .resources_of_type("AWS::CloudWatch::Alarm")
        .iter()
        .any(|alarm| {
            template
                .alarm_metrics(alarm)
                .iter()
                .any(|m| &m.namespace == namespace && m.name == name)
        })
}

#[test]
fn alarms_watch_the_dead_letter_queue_and_every_function() {
    let template = template();
    let alarms = template.resources_of_type("AWS::CloudWatch::Alarm");
    let topics = template.resources_of_type("AWS::SNS::Topic");
    assert_eq!(topics.len(), 1, "one alarm topic, found {topics:?}");
    let topic = &topics[0];
    for alarm in &alarms {
        assert_eq!(
            template.alarm_action_targets(alarm),
            std::slice::from_ref(topic),
            "{alarm} notifies no one: its AlarmActions must be [!Ref {topic}]"
        );
    }
    let (queue, dlq) = edit_queues(&template);
    let sqs =
        |metric: &str, queue: &str| alarms_on(&template, "AWS/SQS", metric, "QueueName", queue);
    assert!(
        !sqs("ApproximateNumberOfMessagesVisible", &dlq).is_empty(),
        "no alarm on the dead-letter queue {dlq}"
    );
    // The backlog, in messages and in age.
    for metric in [
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    ] {
        assert!(
            !sqs(metric, &queue).is_empty(),
            "no alarm on {metric} of the edit queue {queue}"
        );
    }
    // A crash or timeout, and Lambda refusing to run it at all.
    for f in template.functions() {
        for metric in ["Errors", "Throttles"] {
            assert!(
                !alarms_on(
                    &template,
                    "AWS/Lambda",
                    metric,
                    "FunctionName",
                    &f.logical_id
                )
                .is_empty(),
                "no {metric} alarm on {}",
                f.logical_id
            );
        }
    }
    // On-demand tables throttle too (a hot partition); ThrottledRequests would need an
    // Operation dimension, these two do not.
    for metric in ["ReadThrottleEvents", "WriteThrottleEvents"] {
        assert!(
            !alarms_on(&template, "AWS/DynamoDB", metric, "TableName", "Table").is_empty(),
            "no alarm on the table's {metric}"
        );
    }
}

#[test]
fn alarms_reach_someone_through_a_topic_cloudwatch_may_publish_to() {
    let template = template();
    let topics = template.resources_of_type("AWS::SNS::Topic");
    assert_eq!(topics.len(), 1, "one alarm topic, found {topics:?}");
    let topic = &topics[0];
    // CloudWatch acts for an alarm of this account: the grant is conditioned on both.
    let for_our_alarms = |statement: &Value| -> bool {
        let condition = statement.get("Condition");
        let find = |operators: &[&str], key: &str| -> Option<String> {
            let condition = condition?.as_mapping()?;
            condition.iter().find_map(|(op, block)| {
                let op = scalar(op)?;
                if !operators.contains(&op.as_str()) {
                    return None;
                }
                block.as_mapping()?.iter().find_map(|(k, v)| {
                    let k = scalar(k)?;
                    (k.eq_ignore_ascii_case(key))
                        .then(|| serde_yaml::to_string(v).unwrap_or_default())
                })
            })
        };
        let arn = find(&["ArnLike", "ArnEquals"], "aws:SourceArn").unwrap_or_default();
        arn.contains(":cloudwatch:")
            && arn.contains(":alarm:")
            && find(&["StringEquals"], "aws:SourceAccount").is_some()
    };
    let grants_cloudwatch = |statement: &&Value| -> bool {
        statement.get("Effect").and_then(scalar).as_deref() == Some("Allow")
            && statement
                .get("Principal")
                .and_then(|p| p.get("Service"))
                .is_some_and(|s| {
                    as_list(s)
                        .into_iter()
                        .filter_map(scalar)
                        .any(|s| s == "cloudwatch.amazonaws.com")
                })
    };
    let actions = |statement: &Value| -> BTreeSet<String> {
        statement
            .get("Action")
            .map(|a| as_list(a).into_iter().filter_map(scalar).collect())
            .unwrap_or_default()
    };
    let statements = |policy: &Value| -> Vec<Value> {
        policy
            .get("Statement")
            .map(|s| as_list(s).into_iter().cloned().collect())
            .unwrap_or_default()
    };

    // No key (SNS then stores messages unencrypted) or one of this stack's: the AWS-managed
    // alias/aws/sns key's policy does not let CloudWatch use it, and every alarm fails silently.
    if let Some(key) = template.properties(topic).unwrap().get("KmsMasterKeyId") {
        if let Some(text) = scalar(key) {
            panic!(
                "{topic}: KmsMasterKeyId {text} is a key this template does not define (AWS-managed \
                 ones such as alias/aws/sns do not let CloudWatch publish): use a key of the stack's \
                 own whose policy lets cloudwatch.amazonaws.com use it, or none"
            );
        }
        let key_id = target_id(key).unwrap_or_else(|| panic!("{topic}: KmsMasterKeyId {key:?}"));
        assert_eq!(
            template.resource_type(&key_id),
            Some("AWS::KMS::Key"),
            "{topic}: its key {key_id} is a customer-managed key of this stack"
        );
        let policy = template
            .properties(&key_id)
            .and_then(|p| p.get("KeyPolicy"))
            .unwrap();
        let statements = statements(policy);
        let grant = statements
            .iter()
            .find(grants_cloudwatch)
            .unwrap_or_else(|| panic!("{key_id}: its policy does not let CloudWatch use it"));
        let granted = actions(grant);
        assert!(
            granted.contains("kms:Decrypt")
                && (granted.contains("kms:GenerateDataKey*")
                    || granted.contains("kms:GenerateDataKey")),
            "{key_id}: CloudWatch needs kms:Decrypt and kms:GenerateDataKey* to publish, has {granted:?}"
        );
        assert!(
            for_our_alarms(grant),
            "{key_id}: CloudWatch's use is conditioned on aws:SourceArn (this account's alarms) \
             and aws:SourceAccount"
        );
    }

    let policy = template
        .resources_of_type("AWS::SNS::TopicPolicy")
        .into_iter()
        .find_map(|id| {
            let props = template.properties(&id)?;
            let topics = props.get("Topics")?;
            as_list(topics)
                .into_iter()
                .any(|t| ref_target(t) == Some(topic.as_str()))
                .then(|| props.get("PolicyDocument").cloned())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no AWS::SNS::TopicPolicy on {topic}"));
    let statements = statements(&policy);
    let publish = statements
        .iter()
        .filter(grants_cloudwatch)
        .find(|s| actions(s).contains("sns:Publish"))
        .unwrap_or_else(|| panic!("{topic}: its policy does not let CloudWatch publish"));
    assert!(
        for_our_alarms(publish),
        "{topic}: CloudWatch may publish for this account's alarms only (aws:SourceArn, \
         aws:SourceAccount)"
    );
}

#[test]
fn the_api_alarms_on_its_share_of_5xx_its_4xx_and_every_429() {
    let template = template();
    let api = http_api(&template);
    let on_api = |metric: &str| alarms_on(&template, "AWS/ApiGateway", metric, "ApiId", &api);
    assert!(!on_api("4xx").is_empty(), "no alarm on the API's 4xx");
    let five = on_api("5xx");
    assert!(!five.is_empty(), "no alarm on the API's 5xx");
    for alarm in &five {
        // A share of the requests: 5xx divided by Count in the alarm's metric math.
        let metrics = template.alarm_metrics(alarm);
        let id_of = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name && m.dimension_target("ApiId").as_deref() == Some(&api))
                .and_then(|m| m.id.clone())
                .unwrap_or_else(|| {
                    panic!("{alarm}: 5xx as a share of the requests: metric math on 5xx and Count")
                })
        };
        let (errors, requests) = (id_of("5xx"), id_of("Count"));
        let expression: String = template
            .alarm_expression(alarm)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert!(
            expression.contains(&format!("{errors}/{requests}")),
            "{alarm}: alarms on {errors} / {requests}, not a fixed count: {expression}"
        );
    }

    // 429s: counted from the access log, whose Format writes the status as a string.
    let access = template
        .properties(&api)
        .and_then(|p| p.get("AccessLogSettings"))
        .unwrap();
    let log_group = access.get("DestinationArn").and_then(target_id).unwrap();
    let format = access.get("Format").and_then(scalar).unwrap();
    assert!(
        format.contains(r#""status":"$context.status""#),
        "the access log writes the status as a string: {format}"
    );
    let throttled: Vec<_> = metric_filters(&template, &log_group)
        .into_iter()
        .filter(|(_, pattern, _, _)| {
            pattern
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                == r#"{$.status="429"}"#
        })
        .collect();
    assert!(
        !throttled.is_empty(),
        "no metric filter on {log_group} counts the 429s ({{ $.status = \"429\" }})"
    );
    for (filter, _, namespace, name) in &throttled {
        assert!(
            alarmed(&template, namespace, name),
            "{filter}: no alarm on its metric {name}"
        );
    }
}

/// Every Rust source file of the deployed code (shared/ and functions/), with its text.
fn rust_sources() -> Vec<(std::path::PathBuf, String)> {
    let root = workspace_root();
    let mut sources = Vec::new();
    let mut stack = vec![root.join("shared"), root.join("functions")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                sources.push((path, text));
            }
        }
    }
    sources
}

#[test]
fn the_log_lines_of_an_event_not_queued_are_counted_and_alarmed_on() {
    let template = template();
    let webhooks = function(&template, "webhooks");
    let log_group = webhooks
        .property("LoggingConfig")
        .and_then(|l| l.get("LogGroup"))
        .and_then(target_id)
        .unwrap();
    let sources = rust_sources();
    let mut counted = BTreeSet::new();
    for (filter, pattern, namespace, name) in metric_filters(&template, &log_group) {
        // A quoted phrase (a term pattern, or a value in a JSON pattern): the code's own words.
        let phrase = pattern
            .split_once('"')
            .and_then(|(_, rest)| rest.rsplit_once('"'))
            .map(|(phrase, _)| phrase.to_owned())
            .unwrap_or_else(|| panic!("{filter}: {pattern} is no quoted phrase"));
        let literal = format!("\"{phrase}\"");
        let said_in: Vec<_> = sources
            .iter()
            .filter(|(_, text)| text.contains(&literal))
            .map(|(path, _)| path.clone())
            .collect();
        assert!(
            !said_in.is_empty(),
            "{filter}: no code logs {literal} any more: the metric filter counts nothing"
        );
        counted.extend(said_in);
        assert!(
            alarmed(&template, &namespace, &name),
            "{filter}: no alarm on its metric {name}"
        );
    }
    // An accepted event that SQS did not take (the adapter's SendMessage failure), and the mark
    // of such an event that could not be released (MarkedQueue).
    for (file, what) in [
        (
            "shared/queue/src/sqs.rs",
            "an accepted event that SQS did not take",
        ),
        (
            "shared/queue/src/intake.rs",
            "a mark of an event not queued that could not be released",
        ),
    ] {
        let path = workspace_root().join(file);
        assert!(
            counted.contains(&path),
            "no metric filter on {log_group} counts the line {file} logs for {what}"
        );
    }
}

#[test]
fn every_route_has_its_own_throttle_and_events_ten_times_the_apis() {
    let template = template();
    let api = http_api(&template);
    let props = template.properties(&api).unwrap();
    let limits = |what: &str, settings: &Value| -> (u64, u64) {
        let get = |name: &str| {
            settings
                .get(name)
                .and_then(number)
                .unwrap_or_else(|| panic!("{what}: {name}"))
        };
        let (rate, burst) = (get("ThrottlingRateLimit"), get("ThrottlingBurstLimit"));
        // Above the account's own quotas (10,000 requests/s, 5,000 burst per region) a limit
        // is never reached.
        assert!(
            (1..=10_000).contains(&rate) && (1..=5_000).contains(&burst),
            "{what}: rate {rate}, burst {burst}"
        );
        (rate, burst)
    };
    limits(
        "DefaultRouteSettings",
        props
            .get("DefaultRouteSettings")
            .expect("a default throttle for a route added without its own"),
    );
    let settings: BTreeMap<String, (u64, u64)> = props
        .get("RouteSettings")
        .and_then(Value::as_mapping)
        .expect("RouteSettings: a throttle per route")
        .iter()
        .map(|(key, value)| {
            let key = scalar(key).unwrap();
            let limit = limits(&key, value);
            (key, limit)
        })
        .collect();
    let routes: BTreeSet<String> = template
        .functions()
        .iter()
        .flat_map(Function::http_routes)
        .map(|r| r.to_string())
        .collect();
    let named: BTreeSet<String> = settings.keys().cloned().collect();
    assert_eq!(
        named,
        routes,
        "\nroutes without their own throttle: [{}]\nRouteSettings of no route (a deploy fails): [{}]",
        set_diff(&routes, &named),
        set_diff(&named, &routes)
    );
    // Webhooks and Forge events (every route of the webhooks function) against the edit and
    // admin APIs (/api/...).
    let events: Vec<(u64, u64)> = function(&template, "webhooks")
        .http_routes()
        .iter()
        .map(|r| settings[&r.to_string()])
        .collect();
    let apis: Vec<(u64, u64)> = settings
        .iter()
        .filter(|(route, _)| {
            route
                .split_once(' ')
                .is_some_and(|(_, p)| p.starts_with("/api/"))
        })
        .map(|(_, limit)| *limit)
        .collect();
    assert!(events.len() >= 4 && !apis.is_empty());
    let least_event_rate = events.iter().map(|l| l.0).min().unwrap();
    let least_event_burst = events.iter().map(|l| l.1).min().unwrap();
    let most_api_rate = apis.iter().map(|l| l.0).max().unwrap();
    let most_api_burst = apis.iter().map(|l| l.1).max().unwrap();
    assert!(
        least_event_rate >= 10 * most_api_rate && least_event_burst >= 10 * most_api_burst,
        "webhook and Forge event routes (rate {least_event_rate}, burst {least_event_burst}) need \
         at least 10x the edit and admin APIs' (rate {most_api_rate}, burst {most_api_burst}): a \
         429 on a webhook is an event lost"
    );
}

#[test]
fn the_readme_says_what_every_alarm_means() {
    let template = template();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split_once("\n### Alarms\n")
        .map(|(_, rest)| rest.split("\n### ").next().unwrap_or_default())
        .expect("README.md has an \"### Alarms\" section");
    let missing: Vec<String> = template
        .resources_of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|alarm| !section.contains(&format!("`{alarm}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md, \"Alarms\", does not say what these alarms mean: {missing:?}"
    );
    // The deployment's summary and its costs count them.
    let count = template.resources_of_type("AWS::CloudWatch::Alarm").len();
    for said in [
        format!("{count} alarms to one SNS topic"),
        format!("{count} CloudWatch alarms"),
    ] {
        assert!(
            readme.contains(&said),
            "README.md should say \"{said}\" (Deployment, Costs)"
        );
    }
}

#[test]
fn the_secrets_key_is_multi_region_rotated_and_kept_with_the_table() {
    let template = template();
    let key = template.resource("SecretsKey").unwrap();
    let props = key.get("Properties").unwrap();
    assert_eq!(
        props.get("MultiRegion").and_then(Value::as_bool),
        Some(true),
        "SecretsKey is multi-Region, so the retained table can be opened in another region"
    );
    assert_eq!(
        props.get("EnableKeyRotation").and_then(Value::as_bool),
        Some(true)
    );
    for id in ["SecretsKey", "Table"] {
        let resource = template.resource(id).unwrap();
        for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
            assert_eq!(
                resource.get(policy).and_then(scalar).as_deref(),
                Some("Retain"),
                "{id}: {policy} (losing it forces every tenant to install again)"
            );
        }
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
    // One deploy that stays deployed: with neither, APP_BASE_URL is left unset (never a
    // placeholder) and the functions take the base URL from each request, so `PublicBaseUrl` is
    // optional and no second deploy has to set it.
    assert!(
        base_url.contains("AWS::NoValue") && !base_url.contains(".invalid"),
        "without PublicBaseUrl and DomainName, APP_BASE_URL is unset: {base_url}"
    );
    for (binary, vars) in code_env() {
        assert!(
            vars.read.contains("APP_BASE_URL") && !vars.required.contains("APP_BASE_URL"),
            "{binary} reads APP_BASE_URL but must start without it: {vars:?}"
        );
    }
    let public_base_url = params.get("PublicBaseUrl").unwrap();
    assert_eq!(
        public_base_url.get("Default").and_then(scalar).as_deref(),
        Some(""),
        "PublicBaseUrl needs no value"
    );
    let description = public_base_url
        .get("Description")
        .and_then(scalar)
        .unwrap_or_default();
    assert!(
        description.starts_with("Optional"),
        "PublicBaseUrl's description says it is optional: {description}"
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
