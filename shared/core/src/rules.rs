//! Edit rules: which webhook events lead to which edit, and what to do on restricted pages.
//!
//! ```json
//! {"restricted_pages": "impersonate",
//!  "rules": [{"name": "footer", "events": ["page_created", "page_updated"], "spaces": ["DOCS"],
//!             "title": "^Release .*", "edit": [{"append": "<p>Reviewed</p>"}]}]}
//! ```
//! `restricted_pages` is `impersonate` (default), `grant` or `skip`. `spaces` (space keys) and
//! `title` (a regular expression, matched anywhere unless anchored) are optional filters; a rule
//! without them matches every page of its events. Every matching rule contributes its operations,
//! in document order, to one edit. A document is checked whole when it is read: an invalid one is
//! refused with the reason and never half-applied.

use std::fmt;

use crate::edit::{Edit, EditOp, MAX_OPERATIONS};
use crate::engine::RestrictedPagePolicy;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// The page events the app subscribes to, one URL each (webhook bodies carry no event name).
///
/// Each has a Connect name (the descriptor's webhook event) and a Forge name (the product event a
/// Forge trigger delivers, docs/protocol.md §16). A rules document may name either; it is written
/// back, and queued, by its Connect name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// `page_created`, or Forge's `avi:confluence:created:page`.
    #[serde(alias = "avi:confluence:created:page")]
    PageCreated,
    /// `page_updated`, or Forge's `avi:confluence:updated:page`.
    #[serde(alias = "avi:confluence:updated:page")]
    PageUpdated,
    /// `content_permissions_updated` (restrictions changed), or Forge's
    /// `avi:confluence:permissions_updated:page`.
    #[serde(alias = "avi:confluence:permissions_updated:page")]
    ContentPermissionsUpdated,
}

impl WebhookEvent {
    /// Every event, in descriptor order.
    pub const ALL: [Self; 3] = [
        Self::PageCreated,
        Self::PageUpdated,
        Self::ContentPermissionsUpdated,
    ];

    /// The event's name, as in the descriptor.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PageCreated => "page_created",
            Self::PageUpdated => "page_updated",
            Self::ContentPermissionsUpdated => "content_permissions_updated",
        }
    }

    /// The event's name on Forge (a product event's `eventType`).
    pub fn forge_name(self) -> &'static str {
        match self {
            Self::PageCreated => "avi:confluence:created:page",
            Self::PageUpdated => "avi:confluence:updated:page",
            Self::ContentPermissionsUpdated => "avi:confluence:permissions_updated:page",
        }
    }

    /// The event a Forge product event's `eventType` names, if it is one the app handles.
    pub fn from_forge_name(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.forge_name() == event_type)
    }

    /// The event a webhook path (`/webhooks/<event>`) is for.
    pub fn from_path(path: &str) -> Option<Self> {
        let name = path.strip_prefix("/webhooks/")?;
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rules document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edit rules: {0}")]
pub struct RulesError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesDocument {
    #[serde(default)]
    restricted_pages: RestrictedPagePolicy,
    /// Read one by one, so an error can say which rule it is in.
    #[serde(default)]
    rules: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    name: String,
    events: Vec<WebhookEvent>,
    #[serde(default)]
    spaces: Option<Vec<String>>,
    #[serde(default)]
    title: Option<String>,
    edit: serde_json::Value,
}

/// A checked rules document.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// What to do when a restriction blocks the app.
    pub restricted_pages: RestrictedPagePolicy,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    events: Vec<WebhookEvent>,
    spaces: Option<Vec<String>>,
    title: Option<Regex>,
    edit: Edit,
}

/// What an event is about, for matching.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The space key, when the event names it.
    pub space_key: Option<&'a str>,
    /// The page title, when the event names it.
    pub title: Option<&'a str>,
}

/// The edit an event calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The operations of every matching rule, in order.
    pub edit: Edit,
    /// The matching rules' names.
    pub rules: Vec<String>,
    /// The policy for restricted pages.
    pub policy: RestrictedPagePolicy,
}

/// Tenant rules are stored documents: bound what one may cost to compile.
const MAX_TITLE_PATTERN: usize = 1_000;
const MAX_RULES: usize = 100;

impl Rules {
    /// The largest rules document, as compact JSON: 64 KiB, room for the 100 rules a document may
    /// hold with long titles and fragments. A tenant's document is stored in the table (400 KB
    /// items); the deployment's is too, since Lambda's environment holds 4 KB in all.
    pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

    /// Parses and checks a whole document.
    pub fn parse(json: &str) -> Result<Self, RulesError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| RulesError(format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Checks a document already parsed as JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self, RulesError> {
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
        if size > Self::MAX_DOCUMENT_BYTES {
            return Err(RulesError(format!(
                "the document is {size} bytes as JSON; at most {} are accepted",
                Self::MAX_DOCUMENT_BYTES
            )));
        }
        let doc: RulesDocument =
            serde_json::from_value(value).map_err(|e| RulesError(e.to_string()))?;
        if doc.rules.len() > MAX_RULES {
            return Err(RulesError(format!("at most {MAX_RULES} rules")));
        }
        let mut rules = Vec::with_capacity(doc.rules.len());
        let mut operations: usize = 0;
        for (index, rule) in doc.rules.into_iter().enumerate() {
            let number = index.saturating_add(1);
            let label = match rule.get("name").and_then(serde_json::Value::as_str) {
                Some(name) => format!(
                    "rule {number} (`{}`)",
                    name.chars().take(64).collect::<String>()
                ),
                None => format!("rule {number}"),
            };
            let rule: RuleDocument =
                serde_json::from_value(rule).map_err(|e| RulesError(format!("{label}: {e}")))?;
            let name = rule.name.trim().to_owned();
            if name.is_empty() {
                return Err(RulesError("a rule has an empty name".into()));
            }
            if rules.iter().any(|r: &Rule| r.name == name) {
                return Err(RulesError(format!("two rules are named `{name}`")));
            }
            if rule.events.is_empty() {
                return Err(RulesError(format!("rule `{name}` names no events")));
            }
            let title = match rule.title {
                Some(pattern) if pattern.len() > MAX_TITLE_PATTERN => {
                    return Err(RulesError(format!("rule `{name}`: title pattern too long")));
                }
                Some(pattern) => Some(
                    RegexBuilder::new(&pattern)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            RulesError(format!(
                                "rule `{name}`: title is not a valid regular expression: {e}"
                            ))
                        })?,
                ),
                None => None,
            };
            let edit = Edit::from_value(rule.edit)
                .map_err(|e| RulesError(format!("rule `{name}`: {e}")))?;
            // A replace whose output contains what it looks for finds it again on the next event,
            // so it would edit the page on every webhook, its own edits included.
            if let Some(index) = edit
                .ops()
                .iter()
                .position(|op| matches!(op, EditOp::Replace(r) if r.with.contains(r.find.as_str())))
            {
                return Err(RulesError(format!(
                    "rule `{name}`: operation {index}: `with` contains `find`, so the rule would \
                     match its own output and edit the page on every event"
                )));
            }
            operations = operations.saturating_add(edit.ops().len());
            if operations > MAX_OPERATIONS {
                return Err(RulesError(format!(
                    "the rules have more than {MAX_OPERATIONS} operations in all (any that match one \
                     event make one edit, which may have at most {MAX_OPERATIONS})"
                )));
            }
            rules.push(Rule {
                name,
                events: rule.events,
                spaces: rule.spaces,
                title,
                edit,
            });
        }
        Ok(Self {
            restricted_pages: doc.restricted_pages,
            rules,
        })
    }

    /// Reads `EDIT_RULES`: inline JSON (starting with `{`) or the path of a JSON file. Unset means
    /// no rules: the app acknowledges events and edits nothing.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, RulesError> {
        match Self::document_from_env_value(value)? {
            None => Ok(Self::default()),
            Some(document) => Self::from_value(document),
        }
    }

    /// The document `EDIT_RULES` names (inline JSON, or a file's), as JSON, for showing it;
    /// `None` when unset.
    pub fn document_from_env_value(
        value: Option<&str>,
    ) -> Result<Option<serde_json::Value>, RulesError> {
        let text = match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => return Ok(None),
            Some(inline) if inline.starts_with('{') => inline.to_owned(),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| RulesError(format!("cannot read EDIT_RULES file {path}: {e}")))?,
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RulesError(format!("not valid JSON: {e}")))
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The edit `event` on `subject` calls for, if any rule matches.
    pub fn decide(&self, event: WebhookEvent, subject: Subject<'_>) -> Option<Decision> {
        let mut ops = Vec::new();
        let mut names = Vec::new();
        for rule in &self.rules {
            if !rule.events.contains(&event) {
                continue;
            }
            if let Some(spaces) = &rule.spaces
                && !subject
                    .space_key
                    .is_some_and(|key| spaces.iter().any(|s| s == key))
            {
                continue;
            }
            if let Some(title) = &rule.title
                && !subject.title.is_some_and(|t| title.is_match(t))
            {
                continue;
            }
            ops.extend(rule.edit.ops().iter().cloned());
            names.push(rule.name.clone());
        }
        if names.is_empty() {
            return None;
        }
        Some(Decision {
            edit: Edit::new(ops).ok()?,
            rules: names,
            policy: self.restricted_pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document of `rules` rules whose fragments make it about `bytes` long as JSON.
    pub(crate) fn document_of(rules: usize, bytes: usize) -> serde_json::Value {
        let fragment_len = bytes / rules.max(1);
        let rules: Vec<serde_json::Value> = (0..rules)
            .map(|n| {
                serde_json::json!({"name": format!("rule-{n}"), "events": ["page_updated"],
                                   "spaces": ["DOCS"], "title": "^Release .*",
                                   "edit": [{"append": format!("<p>{}</p>", "x".repeat(fragment_len.saturating_sub(120)))}]})
            })
            .collect();
        serde_json::json!({"restricted_pages": "impersonate", "rules": rules})
    }

    #[test]
    fn a_full_document_up_to_64_kib_is_accepted_and_a_larger_one_refused() {
        // 50 rules of one operation each: the most operations a document may hold.
        let full = document_of(50, 60 * 1024);
        let size = serde_json::to_vec(&full).unwrap().len();
        assert!(
            (55 * 1024..=Rules::MAX_DOCUMENT_BYTES).contains(&size),
            "{size}"
        );
        assert_eq!(Rules::from_value(full).unwrap().len(), 50);
        let over = document_of(50, 70 * 1024);
        let err = Rules::from_value(over).unwrap_err().to_string();
        assert!(err.contains("at most 65536"), "{err}");
    }

    #[test]
    fn an_error_names_the_rule_and_the_field() {
        let err = Rules::parse(
            r#"{"rules": [{"name": "ok", "events": ["page_created"], "edit": [{"append": "<p>a</p>"}]},
                          {"name": "second", "events": ["page_created"], "edit": [], "colour": 1}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rule 2 (`second`)") && err.contains("colour"),
            "{err}"
        );
        let err = Rules::parse(r#"{"rules": [{"events": ["page_created"], "edit": []}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule 1:") && err.contains("name"), "{err}");
        let err = Rules::parse(r#"{"rules": [{"name": "x", "events": ["nope"], "edit": []}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rule 1 (`x`)") && err.contains("nope"),
            "{err}"
        );
    }

    const EXAMPLE: &str = r#"{"restricted_pages": "impersonate",
      "rules": [{"name": "footer", "events": ["page_created", "page_updated"], "spaces": ["DOCS"],
                 "title": "^Release .*", "edit": [{"append": "<p>Reviewed</p>"},
                                                  {"replace": {"find": "TODO", "with": "DONE"}},
                                                  {"prepend": "<p>Draft</p>"}, {"set_title": "New title"}]}]}"#;

    fn docs(title: &str) -> Subject<'_> {
        Subject {
            space_key: Some("DOCS"),
            title: Some(title),
        }
    }

    #[test]
    fn the_documented_example_parses_and_matches_by_event_space_and_title() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        let decision = rules
            .decide(WebhookEvent::PageUpdated, docs("Release 1.0"))
            .unwrap();
        assert_eq!(decision.rules, ["footer"]);
        assert_eq!(decision.edit.ops().len(), 4);
        assert_eq!(decision.policy, RestrictedPagePolicy::Impersonate);
        assert!(
            rules
                .decide(WebhookEvent::ContentPermissionsUpdated, docs("Release 1.0"))
                .is_none()
        );
        assert!(
            rules
                .decide(WebhookEvent::PageUpdated, docs("Notes"))
                .is_none()
        );
        let other_space = Subject {
            space_key: Some("HR"),
            title: Some("Release 1.0"),
        };
        assert!(
            rules
                .decide(WebhookEvent::PageUpdated, other_space)
                .is_none()
        );
    }

    #[test]
    fn matching_rules_add_up_in_order_and_filters_are_optional() {
        let rules = Rules::parse(
            r#"{"restricted_pages": "grant", "rules": [
                {"name": "a", "events": ["page_created"], "edit": [{"append": "<p>a</p>"}]},
                {"name": "b", "events": ["page_created"], "spaces": ["X"], "edit": [{"append": "<p>b</p>"}]},
                {"name": "c", "events": ["page_created"], "edit": [{"prepend": "<p>c</p>"}]}]}"#,
        )
        .unwrap();
        let d = rules
            .decide(
                WebhookEvent::PageCreated,
                Subject {
                    space_key: None,
                    title: None,
                },
            )
            .unwrap();
        assert_eq!(d.rules, ["a", "c"]);
        assert_eq!(d.policy, RestrictedPagePolicy::Grant);
    }

    #[test]
    fn invalid_documents_are_refused_whole_with_the_reason() {
        for (doc, reason) in [
            ("{", "JSON"),
            (r#"{"rules": [], "extra": 1}"#, "unknown field"),
            (r#"{"restricted_pages": "sometimes"}"#, "unknown variant"),
            (
                r#"{"rules": [{"name": "x", "events": ["page_moved"], "edit": [{"append": "a"}]}]}"#,
                "unknown variant",
            ),
            (
                r#"{"rules": [{"name": "x", "events": [], "edit": [{"append": "a"}]}]}"#,
                "no events",
            ),
            (
                r#"{"rules": [{"name": " ", "events": ["page_created"], "edit": [{"append": "a"}]}]}"#,
                "empty name",
            ),
            (
                r#"{"rules": [{"name": "x", "events": ["page_created"], "title": "(", "edit": [{"append": "a"}]}]}"#,
                "regular expression",
            ),
            (
                r#"{"rules": [{"name": "x", "events": ["page_created"], "edit": [{"delete": "a"}]}]}"#,
                "rule `x`",
            ),
            (
                r#"{"rules": [{"name": "x", "events": ["page_created"], "edit": [{"append": "a"}]},
                           {"name": "x", "events": ["page_created"], "edit": [{"append": "b"}]}]}"#,
                "two rules",
            ),
        ] {
            let err = Rules::parse(doc).unwrap_err().to_string();
            assert!(err.contains(reason), "{doc}: {err}");
        }
    }

    #[test]
    fn the_edit_bounds_hold_for_a_whole_document() {
        let rule = |name: &str, ops: usize| {
            serde_json::json!({"name": name, "events": ["page_created"],
                "edit": (0..ops).map(|i| serde_json::json!({"append": format!("<p>{i}</p>")}))
                    .collect::<Vec<_>>()})
        };
        let doc = |rules: Vec<serde_json::Value>| serde_json::json!({ "rules": rules });
        // One edit at the bound is fine; one more operation anywhere in the document is not, since
        // both rules may match one event.
        assert!(Rules::from_value(doc(vec![rule("a", MAX_OPERATIONS)])).is_ok());
        assert!(
            Rules::from_value(doc(vec![rule("a", 30), rule("b", MAX_OPERATIONS - 30)])).is_ok()
        );
        let err = Rules::from_value(doc(vec![rule("a", 30), rule("b", MAX_OPERATIONS - 29)]))
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let err = Rules::from_value(doc(vec![rule("a", MAX_OPERATIONS + 1)])).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        // So any set of matching rules makes an edit.
        let rules =
            Rules::from_value(doc(vec![rule("a", 30), rule("b", MAX_OPERATIONS - 30)])).unwrap();
        let all = Subject {
            space_key: None,
            title: None,
        };
        let decision = rules.decide(WebhookEvent::PageCreated, all).unwrap();
        assert_eq!(decision.edit.ops().len(), MAX_OPERATIONS);
    }

    #[test]
    fn a_replace_that_matches_its_own_output_is_refused_when_the_rules_load() {
        for (find, with) in [("a", "aaaaaaaaaa"), ("TODO", "TODO done"), ("x", "x")] {
            let doc = serde_json::json!({"rules": [{"name": "grow", "events": ["page_updated"],
                "edit": [{"append": "<p>a</p>"}, {"replace": {"find": find, "with": with}}]}]});
            let err = Rules::from_value(doc).unwrap_err().to_string();
            assert!(
                err.contains("operation 1") && err.contains("every event"),
                "{err}"
            );
        }
        let fine = serde_json::json!({"rules": [{"name": "ok", "events": ["page_updated"],
            "edit": [{"replace": {"find": "TODO", "with": "DONE"}}]}]});
        assert!(Rules::from_value(fine).is_ok());
    }

    #[test]
    fn rules_may_name_events_by_their_connect_or_their_forge_names() {
        let rules = Rules::parse(
            r#"{"rules": [{"name": "both", "events": ["avi:confluence:updated:page", "page_created"],
                           "edit": [{"append": "<p>x</p>"}]}]}"#,
        )
        .unwrap();
        let any = Subject {
            space_key: None,
            title: None,
        };
        assert!(rules.decide(WebhookEvent::PageUpdated, any).is_some());
        assert!(rules.decide(WebhookEvent::PageCreated, any).is_some());
        assert!(
            rules
                .decide(WebhookEvent::ContentPermissionsUpdated, any)
                .is_none()
        );
        for event in WebhookEvent::ALL {
            assert_eq!(
                WebhookEvent::from_forge_name(event.forge_name()),
                Some(event)
            );
            // Queued and written back by the Connect name, as before.
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                serde_json::json!(event.as_str())
            );
        }
        assert_eq!(
            WebhookEvent::from_forge_name("avi:confluence:created:blogpost"),
            None
        );
        assert_eq!(WebhookEvent::from_forge_name("page_created"), None);
    }

    #[test]
    fn edit_rules_come_inline_or_from_a_file() {
        assert!(Rules::from_env_value(None).unwrap().is_empty());
        assert_eq!(Rules::from_env_value(Some(EXAMPLE)).unwrap().len(), 1);
        let file =
            std::env::temp_dir().join(format!("understudy-rules-{}.json", std::process::id()));
        std::fs::write(&file, EXAMPLE).unwrap();
        assert_eq!(Rules::from_env_value(file.to_str()).unwrap().len(), 1);
        std::fs::remove_file(&file).unwrap();
        let missing = Rules::from_env_value(Some("/nonexistent/rules.json")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"));
    }
}
