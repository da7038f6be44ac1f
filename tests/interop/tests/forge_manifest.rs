//! descriptor/manifest.yml against Atlassian's own `@forge/manifest` (npm, pinned in package.json),
//! the package the Forge CLI lints and deploys with: its JSON schema and its validators, run by
//! `forge-manifest.mjs`. The manifest must pass with no error and no warning; broken copies of it
//! must be refused, each with the validator's own words, so a check that cannot fail is caught.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn descriptor_dir() -> PathBuf {
    interop_dir().join("../../descriptor")
}

/// What forge-manifest.mjs said about one manifest.
#[derive(Debug)]
struct Verdict {
    valid: bool,
    schema_errors: Vec<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Verdict {
    fn report(&self) -> String {
        let mut out = String::new();
        for (title, list) in [
            ("JSON schema (ajv)", &self.schema_errors),
            ("validators: errors", &self.errors),
            ("validators: warnings", &self.warnings),
        ] {
            if !list.is_empty() {
                out.push_str(&format!("{title}:\n"));
                for line in list {
                    out.push_str(&format!("  - {line}\n"));
                }
            }
        }
        out
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.schema_errors
            .iter()
            .chain(&self.errors)
            .chain(&self.warnings)
    }
}

/// Runs `node forge-manifest.mjs <manifest>...` once for all of them (the package's processors
/// compile their 2 MB schema once per run). Fails with instructions when the package is missing:
/// the README's test command installs it, and a missing oracle must fail the run, never skip it.
fn validate(manifests: &[&Path]) -> Vec<Verdict> {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules/@forge/manifest/out/schema/manifest-schema.json")
            .exists(),
        "@forge/manifest is not installed in {}: run the README's test command (bash tests/run.sh), \
         or `npm ci` in that folder",
        dir.display()
    );
    let output = Command::new("node")
        .arg(dir.join("forge-manifest.mjs"))
        .args(manifests)
        .current_dir(&dir)
        .output()
        .expect("start node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut verdicts = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let answer: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "forge-manifest.mjs printed {line:?} ({e}); status {}\nstderr: {stderr}",
                output.status
            )
        });
        if let Some(fatal) = answer["fatal"].as_str() {
            panic!("forge-manifest.mjs could not check the manifest: {fatal}\nstderr: {stderr}");
        }
        let list = |name: &str| -> Vec<String> {
            answer[name]
                .as_array()
                .unwrap_or_else(|| panic!("no {name} in {answer}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        verdicts.push(Verdict {
            valid: answer["valid"].as_bool().unwrap(),
            schema_errors: list("schemaErrors"),
            errors: list("errors"),
            warnings: list("warnings"),
        });
    }
    assert_eq!(
        verdicts.len(),
        manifests.len(),
        "one verdict per manifest; stdout: {stdout}\nstderr: {stderr}"
    );
    // The exit status and the verdicts agree.
    let all_valid = verdicts.iter().all(|v| v.valid);
    assert_eq!(
        output.status.code(),
        Some(if all_valid { 0 } else { 1 }),
        "{verdicts:?}"
    );
    verdicts
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "understudy-forge-manifest-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the manifest with `old` replaced by `new`, next to a copy of the UI resources' sources
/// (all of descriptor/forge/src; unless `with_ui` is false), so that only the change is wrong.
fn broken_copy(old: &str, new: &str, with_ui: bool) -> TempDir {
    let original = std::fs::read_to_string(descriptor_dir().join("manifest.yml")).unwrap();
    assert_eq!(
        original.matches(old).count(),
        1,
        "descriptor/manifest.yml no longer holds this text once; update the broken case:\n{old}"
    );
    let dir = TempDir::new();
    std::fs::write(dir.0.join("manifest.yml"), original.replace(old, new)).unwrap();
    if with_ui {
        copy_tree(
            &descriptor_dir().join("forge/src"),
            &dir.0.join("forge/src"),
        );
    }
    dir
}

/// Copies a folder of sources, sub-folders included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn the_forge_manifest_passes_atlassians_schema_and_validators() {
    let manifest = descriptor_dir().join("manifest.yml");
    // The same text in a directory of its own, as the broken cases below are checked: they differ
    // from it by their change alone.
    let copy = broken_copy("  scheduledTrigger:\n", "  scheduledTrigger:\n", true);
    let copied = copy.0.join("manifest.yml");
    for (verdict, what) in validate(&[&manifest, &copied])
        .iter()
        .zip(["descriptor/manifest.yml", "an unchanged copy of it"])
    {
        assert!(
            verdict.valid && verdict.all().next().is_none(),
            "@forge/manifest refuses {what} (or warns about it):\n{}",
            verdict.report()
        );
    }
}

/// One broken copy: what is changed, and words the refusal must contain.
struct Broken {
    what: &'static str,
    old: &'static str,
    new: &'static str,
    with_ui: bool,
    /// In `schemaErrors` (ajv on the package's JSON schema).
    schema_says: Option<&'static str>,
    /// In `errors` (the package's validators).
    validators_say: &'static str,
}

const BROKEN: &[Broken] = &[
    Broken {
        what: "an interval Forge does not have",
        old: "      interval: hour\n",
        new: "      interval: minute\n",
        with_ui: true,
        schema_says: Some(
            "/modules/scheduledTrigger/0/interval: must be equal to one of the allowed values",
        ),
        validators_say: "interval 'minute' allowed values are 'fiveMinute', 'hour', 'day', 'week'",
    },
    Broken {
        what: "an app id that is not an ARI",
        old: "  id: ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000000\n",
        new: "  id: 00000000-0000-0000-0000-000000000000\n",
        with_ui: true,
        schema_says: Some("/app/id: must match pattern"),
        validators_say: "app property id",
    },
    Broken {
        what: "a user token on a trigger's endpoint",
        old: "        path: /forge/events\n      auth:\n",
        new: "        path: /forge/events\n      auth:\n        appUserToken:\n          enabled: true\n",
        with_ui: true,
        schema_says: None,
        validators_say: "using remote endpoint: 'forge-events' only supports appSystemToken",
    },
    Broken {
        what: "page events without their scope",
        old: "    read:confluence-content.summary: {}\n",
        new: "",
        with_ui: true,
        schema_says: None,
        validators_say: "Trigger event: 'avi:confluence:updated:page' requires 'read:confluence-content.summary' scope",
    },
    Broken {
        what: "an endpoint on a remote that does not exist",
        old: "    - key: forge-lifecycle\n      remote: backend\n",
        new: "    - key: forge-lifecycle\n      remote: elsewhere\n",
        with_ui: true,
        schema_says: None,
        validators_say: "endpoint remote property 'elsewhere' was not found",
    },
    Broken {
        what: "a trigger naming an endpoint that does not exist",
        old: "      endpoint: forge-lifecycle\n",
        new: "      endpoint: forge-nowhere\n",
        with_ui: true,
        schema_says: None,
        validators_say: "trigger references undefined endpoint module with key 'forge-nowhere'",
    },
    Broken {
        what: "the admin page's resolver naming an endpoint that does not exist",
        old: "        endpoint: admin-api\n",
        new: "        endpoint: admin-nowhere\n",
        with_ui: true,
        schema_says: None,
        validators_say: "confluence:globalSettings references undefined endpoint module with key 'admin-nowhere'",
    },
    Broken {
        what: "ignoreSelf on Confluence events",
        old: "        - avi:confluence:permissions_updated:page\n",
        new: "        - avi:confluence:permissions_updated:page\n      filter:\n        ignoreSelf: true\n",
        with_ui: true,
        schema_says: None,
        validators_say: "Trigger filtering with ignoreSelf works only with Jira events",
    },
    Broken {
        what: "a manifest variable with no default and no value",
        old: "      default: https://understudy.invalid\n",
        new: "",
        with_ui: true,
        schema_says: Some("could not find environment variable 'UNDERSTUDY_BASE_URL'"),
        validators_say: "could not find environment variable 'UNDERSTUDY_BASE_URL'",
    },
    Broken {
        what: "the panel's source missing next to the manifest",
        old: "    path: forge/src/index.jsx\n",
        new: "    path: forge/src/index.jsx\n",
        with_ui: false,
        schema_says: None,
        validators_say: "missing resource 'forge/src/index.jsx'",
    },
];

#[test]
fn broken_copies_of_the_manifest_are_refused_with_the_validators_words() {
    let dirs: Vec<TempDir> = BROKEN
        .iter()
        .map(|case| broken_copy(case.old, case.new, case.with_ui))
        .collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.0.join("manifest.yml")).collect();
    let verdicts = validate(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let mut failures = Vec::new();
    for (case, verdict) in BROKEN.iter().zip(&verdicts) {
        let found_in = |list: &[String], words: &str| list.iter().any(|m| m.contains(words));
        let schema_ok = case
            .schema_says
            .is_none_or(|words| found_in(&verdict.schema_errors, words));
        if verdict.valid || !schema_ok || !found_in(&verdict.errors, case.validators_say) {
            failures.push(format!(
                "{}: expected a refusal saying {:?}{}; got valid = {}\n{}",
                case.what,
                case.validators_say,
                case.schema_says
                    .map(|s| format!(" (schema: {s:?})"))
                    .unwrap_or_default(),
                verdict.valid,
                verdict.report()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
