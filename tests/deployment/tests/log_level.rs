//! `RUST_LOG` on Lambda is one of five plain levels: the `LogLevel` parameter cannot carry a
//! directive list (the telemetry caps every crate but the app's own at `info` anyway, whatever the
//! level).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use deployment_tests::{Template, as_list, ref_target, scalar};

#[test]
fn the_log_level_is_one_of_five_plain_levels_and_feeds_every_functions_rust_log() {
    let template = Template::load().expect("template.yaml loads");
    let parameter = template
        .doc()
        .get("Parameters")
        .and_then(|p| p.get("LogLevel"))
        .expect("a LogLevel parameter");
    let allowed: Vec<String> = parameter
        .get("AllowedValues")
        .map(as_list)
        .expect("LogLevel has AllowedValues")
        .into_iter()
        .filter_map(scalar)
        .collect();
    assert_eq!(allowed, ["error", "warn", "info", "debug", "trace"]);
    assert_eq!(
        parameter.get("Default").and_then(scalar).as_deref(),
        Some("info")
    );
    let functions = template.functions();
    assert!(!functions.is_empty());
    for function in functions {
        assert_eq!(
            function.env_value("RUST_LOG").and_then(ref_target),
            Some("LogLevel"),
            "{}",
            function.logical_id
        );
    }
}
