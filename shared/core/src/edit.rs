//! Edit operations on a page's title and storage-format body, and their pure, idempotent application.
//!
//! The JSON form is the one later rules documents use:
//! `[{"append": "<p>Reviewed</p>"}, {"replace": {"find": "TODO", "with": "DONE"}}, {"prepend": "<p>Draft</p>"}, {"set_title": "New title"}]`.
//! Anything else is refused with an [`EditParseError`] that says what was wrong.

use serde::{Deserialize, Serialize};

/// Longest title Confluence accepts.
pub const MAX_TITLE_CHARS: usize = 255;

/// Most operations one edit may have. The same bound holds for a whole rules document (all its
/// rules' operations together), so that any set of matching rules makes an edit within it.
pub const MAX_OPERATIONS: usize = 50;

/// Largest page body an edit may produce, counted as the body travels in the PUT: JSON-escaped
/// ([`json_len`]). Confluence Cloud refuses requests over 5 MiB (5 242 880 bytes; see
/// docs/protocol.md §12); the rest of the PUT (title, version, message) fits in the 16 KiB
/// kept free.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024 - 16 * 1024;

/// One operation on a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EditOp {
    /// Add a storage-format fragment at the end of the body, unless the body already ends with it.
    Append(String),
    /// Add a storage-format fragment at the start of the body, unless the body already starts with it.
    Prepend(String),
    /// Replace every occurrence of a literal text in the body.
    Replace(Replace),
    /// Set the page title.
    SetTitle(String),
}

/// The argument of [`EditOp::Replace`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    /// Literal text to find (not a pattern). Must not be empty.
    pub find: String,
    /// Its replacement.
    pub with: String,
}

/// A list of operations applied in order. Serialises as a plain JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Edit {
    ops: Vec<EditOp>,
}

/// Why an edit document was refused. The texts are fixed words and positions: they never repeat
/// what the caller sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditParseError {
    /// Not JSON, not an array, or an element that is not one of the four operations.
    #[error(
        "invalid edit: {0} (expected a JSON array of {{\"append\": str}}, {{\"prepend\": str}}, \
         {{\"replace\": {{\"find\": str, \"with\": str}}}} or {{\"set_title\": str}})"
    )]
    Shape(String),
    /// The array has no operation.
    #[error("invalid edit: no operations")]
    Empty,
    /// More operations than [`MAX_OPERATIONS`].
    #[error("invalid edit: {count} operations, at most {MAX_OPERATIONS} are allowed")]
    TooManyOperations {
        /// How many were sent.
        count: usize,
    },
    /// Operation `index` (0-based) is well formed but cannot be applied.
    #[error("invalid edit: operation {index}: {reason}")]
    Operation {
        /// Position in the array.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An edit that would make the page larger than Confluence accepts. Found before the operation runs,
/// so no oversized body is ever built, let alone sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "operation {index} would make the page body {would_be} bytes, more than the {limit} bytes \
     Confluence accepts"
)]
pub struct EditTooLarge {
    /// The operation (0-based) that would cross the bound.
    pub index: usize,
    /// The body's size after it, as sent (JSON-escaped), saturated at `usize::MAX`.
    pub would_be: usize,
    /// [`MAX_BODY_BYTES`].
    pub limit: usize,
}

/// How many bytes `text` takes inside a JSON string, as serde_json writes it. Escaping is per
/// character, so the length of a concatenation is the sum of the lengths.
pub fn json_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

impl Edit {
    /// Builds an edit from operations, checking each one.
    pub fn new(ops: Vec<EditOp>) -> Result<Self, EditParseError> {
        if ops.is_empty() {
            return Err(EditParseError::Empty);
        }
        if ops.len() > MAX_OPERATIONS {
            return Err(EditParseError::TooManyOperations { count: ops.len() });
        }
        for (index, op) in ops.iter().enumerate() {
            let reason = match op {
                EditOp::Append(f) | EditOp::Prepend(f) if f.is_empty() => {
                    Some("the fragment is empty")
                }
                EditOp::Append(f) | EditOp::Prepend(f) if json_len(f) > MAX_BODY_BYTES => {
                    Some("the fragment is larger than a page may be")
                }
                EditOp::Replace(r) if r.find.is_empty() => Some("`find` is empty"),
                EditOp::Replace(r) if json_len(&r.with) > MAX_BODY_BYTES => {
                    Some("`with` is larger than a page may be")
                }
                EditOp::SetTitle(t) if t.trim().is_empty() => Some("the title is blank"),
                EditOp::SetTitle(t) if t.chars().count() > MAX_TITLE_CHARS => {
                    Some("the title is longer than 255 characters")
                }
                EditOp::SetTitle(t) if t.chars().any(char::is_control) => {
                    Some("the title contains a control character")
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(EditParseError::Operation { index, reason });
            }
        }
        Ok(Self { ops })
    }

    /// Parses the JSON form (an array of operations).
    pub fn from_json(json: &str) -> Result<Self, EditParseError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            EditParseError::Shape(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Self::from_value(value)
    }

    /// Parses an already decoded JSON value (e.g. part of a rules document).
    pub fn from_value(value: serde_json::Value) -> Result<Self, EditParseError> {
        let serde_json::Value::Array(items) = value else {
            return Err(EditParseError::Shape("not a JSON array".into()));
        };
        if items.len() > MAX_OPERATIONS {
            return Err(EditParseError::TooManyOperations { count: items.len() });
        }
        let ops = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                serde_json::from_value(item).map_err(|_| {
                    EditParseError::Shape(format!("operation {index} is not one of the four"))
                })
            })
            .collect::<Result<Vec<EditOp>, _>>()?;
        Self::new(ops)
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[EditOp] {
        &self.ops
    }

    /// Applies the edit to a page's title and body. Pure: the same input gives the same output, and
    /// applying an edit to its own output changes nothing for appends, prepends and titles.
    ///
    /// Bounded: before each operation runs, the size of the body it would produce is computed, and
    /// an operation that would make it larger than [`MAX_BODY_BYTES`] stops the edit with
    /// [`EditTooLarge`]. A `replace` is measured from the number of matches, so one that would
    /// multiply the page is refused without building it.
    pub fn apply(&self, title: &str, body: &str) -> Result<Applied, EditTooLarge> {
        let mut title = title.to_owned();
        let mut body = body.to_owned();
        let mut size = json_len(&body);
        for (index, op) in self.ops.iter().enumerate() {
            let too_large = |would_be: usize| EditTooLarge {
                index,
                would_be,
                limit: MAX_BODY_BYTES,
            };
            match op {
                EditOp::Append(fragment) | EditOp::Prepend(fragment) => {
                    let present = match op {
                        EditOp::Append(_) => body.trim_end().ends_with(fragment.trim_end()),
                        _ => body.trim_start().starts_with(fragment.trim_start()),
                    };
                    if present {
                        continue;
                    }
                    let after = size.saturating_add(json_len(fragment));
                    if after > MAX_BODY_BYTES {
                        return Err(too_large(after));
                    }
                    if matches!(op, EditOp::Append(_)) {
                        body.push_str(fragment);
                    } else {
                        body.insert_str(0, fragment);
                    }
                    size = after;
                }
                EditOp::Replace(Replace { find, with }) => {
                    let matches = body.matches(find.as_str()).count();
                    if matches == 0 {
                        continue;
                    }
                    let after = size
                        .saturating_sub(matches.saturating_mul(json_len(find)))
                        .saturating_add(matches.saturating_mul(json_len(with)));
                    if after > MAX_BODY_BYTES {
                        return Err(too_large(after));
                    }
                    body = body.replace(find.as_str(), with);
                    size = after;
                }
                EditOp::SetTitle(new_title) => {
                    if title != *new_title {
                        title.clone_from(new_title);
                    }
                }
            }
        }
        Ok(Applied { title, body })
    }
}

impl<'de> Deserialize<'de> for Edit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ops = Vec::<EditOp>::deserialize(deserializer)?;
        Self::new(ops).map_err(serde::de::Error::custom)
    }
}

/// A page's title and body after an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new title.
    pub title: String,
    /// The new storage-format body.
    pub body: String,
}

impl Applied {
    /// True when this differs from the page it was computed from: only then is a PUT made.
    pub fn changes(&self, title: &str, body: &str) -> bool {
        self.title != title || self.body != body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"[{"append": "<p>Reviewed</p>"}, {"replace": {"find": "TODO", "with": "DONE"}}, {"prepend": "<p>Draft</p>"}, {"set_title": "New title"}]"#;

    #[test]
    fn the_documented_json_form_parses_into_the_four_operations() {
        let edit = Edit::from_json(DOC).unwrap();
        assert_eq!(
            edit.ops(),
            &[
                EditOp::Append("<p>Reviewed</p>".into()),
                EditOp::Replace(Replace {
                    find: "TODO".into(),
                    with: "DONE".into()
                }),
                EditOp::Prepend("<p>Draft</p>".into()),
                EditOp::SetTitle("New title".into()),
            ]
        );
        // And it serialises back to the same form.
        let back: serde_json::Value = serde_json::to_value(&edit).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(DOC).unwrap()
        );
    }

    #[test]
    fn anything_else_is_refused_with_a_clear_error() {
        for bad in [
            r#"{"append": "x"}"#,
            r#"[{"delete": "x"}]"#,
            r#"[{"append": 3}]"#,
            r#"[{"replace": {"find": "a"}}]"#,
            r#"[{"replace": {"find": "a", "with": "b", "regex": true}}]"#,
            r#"[{"append": "a", "prepend": "b"}]"#,
            r#"["append"]"#,
            "not json",
        ] {
            let err = Edit::from_json(bad).unwrap_err();
            assert!(matches!(err, EditParseError::Shape(_)), "{bad}: {err:?}");
            assert!(err.to_string().starts_with("invalid edit:"), "{err}");
        }
        assert_eq!(Edit::from_json("[]").unwrap_err(), EditParseError::Empty);
        assert_eq!(
            Edit::from_json(r#"[{"append": "x"}, {"replace": {"find": "", "with": "y"}}]"#)
                .unwrap_err(),
            EditParseError::Operation {
                index: 1,
                reason: "`find` is empty"
            }
        );
        assert!(Edit::from_json(r#"[{"set_title": "  "}]"#).is_err());
        assert!(serde_json::from_str::<Edit>(r#"[{"append": ""}]"#).is_err());
    }

    #[test]
    fn operations_apply_in_order() {
        let edit = Edit::from_json(DOC).unwrap();
        let out = edit.apply("Old", "<p>TODO: check</p>").unwrap();
        assert_eq!(out.title, "New title");
        assert_eq!(out.body, "<p>Draft</p><p>DONE: check</p><p>Reviewed</p>");
        assert!(out.changes("Old", "<p>TODO: check</p>"));
    }

    #[test]
    fn applying_an_edit_to_its_own_result_changes_nothing() {
        let edit = Edit::from_json(DOC).unwrap();
        let once = edit.apply("Old", "<p>TODO</p>").unwrap();
        let twice = edit.apply(&once.title, &once.body).unwrap();
        assert_eq!(once, twice);
        assert!(!twice.changes(&once.title, &once.body));
    }

    #[test]
    fn an_append_already_at_the_end_is_not_repeated_but_one_elsewhere_is() {
        let edit = Edit::from_json(r#"[{"append": "<p>Reviewed</p>"}]"#).unwrap();
        // Already there, with trailing whitespace that Confluence may add.
        let same = edit.apply("T", "<p>a</p><p>Reviewed</p>\n").unwrap();
        assert!(!same.changes("T", "<p>a</p><p>Reviewed</p>\n"));
        // Present, but not at the end: appended.
        let moved = edit.apply("T", "<p>Reviewed</p><p>a</p>").unwrap();
        assert_eq!(moved.body, "<p>Reviewed</p><p>a</p><p>Reviewed</p>");
        // Prepend mirrors it.
        let pre = Edit::from_json(r#"[{"prepend": "<p>Draft</p>"}]"#).unwrap();
        assert!(
            !pre.apply("T", " <p>Draft</p><p>x</p>")
                .unwrap()
                .changes("T", " <p>Draft</p><p>x</p>")
        );
        assert_eq!(
            pre.apply("T", "<p>x</p>").unwrap().body,
            "<p>Draft</p><p>x</p>"
        );
    }

    #[test]
    fn the_growth_attack_is_refused_before_the_page_is_built() {
        // 1 000 bytes, then seven replaces that each multiply the body by ten: 10 GB if run.
        let mut ops = vec![serde_json::json!({"append": "a".repeat(1000)})];
        ops.extend(
            (0..7).map(|_| serde_json::json!({"replace": {"find": "a", "with": "aaaaaaaaaa"}})),
        );
        let edit = Edit::from_value(serde_json::Value::Array(ops)).unwrap();
        let started = std::time::Instant::now();
        let err = edit.apply("T", "").unwrap_err();
        // 1 000 × 10⁴ = 10 MB after the fourth replace (operation 4): over the 5 MiB bound.
        assert_eq!(err.index, 4);
        assert_eq!(err.would_be, 10_000_000);
        assert_eq!(err.limit, MAX_BODY_BYTES);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Three replaces (1 MB) are fine.
        let mut ok = vec![serde_json::json!({"append": "a".repeat(1000)})];
        ok.extend(
            (0..3).map(|_| serde_json::json!({"replace": {"find": "a", "with": "aaaaaaaaaa"}})),
        );
        let edit = Edit::from_value(serde_json::Value::Array(ok)).unwrap();
        assert_eq!(edit.apply("T", "").unwrap().body.len(), 1_000_000);
    }

    #[test]
    fn sizes_count_as_sent_json_escaped_and_appends_stop_at_the_bound() {
        assert_eq!(json_len("ab"), 2);
        assert_eq!(json_len("\"<\n"), 5);
        assert_eq!(json_len("\u{1}é"), 8);
        // A page at the bound takes no more, even one byte; a page below it takes what fits.
        let full = "x".repeat(MAX_BODY_BYTES);
        let one = Edit::from_json(r#"[{"append": "y"}]"#).unwrap();
        assert_eq!(
            one.apply("T", &full).unwrap_err(),
            EditTooLarge {
                index: 0,
                would_be: MAX_BODY_BYTES + 1,
                limit: MAX_BODY_BYTES
            }
        );
        assert!(one.apply("T", &full[1..]).is_ok());
        // Quotes count twice: they are escaped in the PUT.
        let quotes = "\"".repeat(MAX_BODY_BYTES / 2);
        assert!(one.apply("T", &quotes).is_err());
    }

    #[test]
    fn operations_are_bounded_in_number_and_errors_never_repeat_the_input() {
        let many = serde_json::Value::Array(
            (0..=MAX_OPERATIONS)
                .map(|i| serde_json::json!({"append": format!("<p>{i}</p>")}))
                .collect(),
        );
        assert_eq!(
            Edit::from_value(many).unwrap_err(),
            EditParseError::TooManyOperations {
                count: MAX_OPERATIONS + 1
            }
        );
        for bad in [
            r#"[{"evil\nINFO forged": "MARKER"}]"#,
            r#"[{"append": ["MARKER"]}]"#,
            r#"[{"replace": {"find": "a", "with": "b", "MARKER": 1}}]"#,
            r#"{"MARKER": 1}"#,
            r#"[{"append": "MARKER"#,
        ] {
            let err = Edit::from_json(bad).unwrap_err().to_string();
            assert!(!err.contains("MARKER") && !err.contains("evil"), "{err}");
        }
    }

    #[test]
    fn a_replace_with_nothing_to_find_and_a_same_title_change_nothing() {
        let edit = Edit::from_json(
            r#"[{"replace": {"find": "TODO", "with": "DONE"}}, {"set_title": "T"}]"#,
        )
        .unwrap();
        assert!(
            !edit
                .apply("T", "<p>done</p>")
                .unwrap()
                .changes("T", "<p>done</p>")
        );
        // Literal, not a pattern.
        let lit = Edit::from_json(r#"[{"replace": {"find": "a.c", "with": "X"}}]"#).unwrap();
        assert_eq!(lit.apply("T", "abc a.c").unwrap().body, "abc X");
    }
}
