//! Edit operations on a page's title and storage-format body, and their pure, idempotent application.
//!
//! The JSON form is the one later rules documents use:
//! `[{"append": "<p>Reviewed</p>"}, {"replace": {"find": "TODO", "with": "DONE"}}, {"prepend": "<p>Draft</p>"}, {"set_title": "New title"}]`.
//! Anything else is refused with an [`EditParseError`] that says what was wrong.

use serde::{Deserialize, Serialize};

/// Longest title Confluence accepts.
pub const MAX_TITLE_CHARS: usize = 255;

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

/// Why an edit document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditParseError {
    /// Not JSON, not an array, an unknown operation, a wrong argument type or an extra field.
    #[error(
        "invalid edit: {0} (expected a JSON array of {{\"append\": str}}, {{\"prepend\": str}}, \
         {{\"replace\": {{\"find\": str, \"with\": str}}}} or {{\"set_title\": str}})"
    )]
    Shape(String),
    /// The array has no operation.
    #[error("invalid edit: no operations")]
    Empty,
    /// Operation `index` (0-based) is well formed but cannot be applied.
    #[error("invalid edit: operation {index}: {reason}")]
    Operation {
        /// Position in the array.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Edit {
    /// Builds an edit from operations, checking each one.
    pub fn new(ops: Vec<EditOp>) -> Result<Self, EditParseError> {
        if ops.is_empty() {
            return Err(EditParseError::Empty);
        }
        for (index, op) in ops.iter().enumerate() {
            let reason = match op {
                EditOp::Append(f) | EditOp::Prepend(f) if f.is_empty() => {
                    Some("the fragment is empty")
                }
                EditOp::Replace(r) if r.find.is_empty() => Some("`find` is empty"),
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
        let ops: Vec<EditOp> =
            serde_json::from_str(json).map_err(|e| EditParseError::Shape(e.to_string()))?;
        Self::new(ops)
    }

    /// Parses an already decoded JSON value (e.g. part of a rules document).
    pub fn from_value(value: serde_json::Value) -> Result<Self, EditParseError> {
        let ops: Vec<EditOp> =
            serde_json::from_value(value).map_err(|e| EditParseError::Shape(e.to_string()))?;
        Self::new(ops)
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[EditOp] {
        &self.ops
    }

    /// Applies the edit to a page's title and body. Pure: the same input gives the same output, and
    /// applying an edit to its own output changes nothing for appends, prepends and titles.
    pub fn apply(&self, title: &str, body: &str) -> Applied {
        let mut title = title.to_owned();
        let mut body = body.to_owned();
        for op in &self.ops {
            match op {
                EditOp::Append(fragment) => {
                    if !body.trim_end().ends_with(fragment.trim_end()) {
                        body.push_str(fragment);
                    }
                }
                EditOp::Prepend(fragment) => {
                    if !body.trim_start().starts_with(fragment.trim_start()) {
                        body.insert_str(0, fragment);
                    }
                }
                EditOp::Replace(Replace { find, with }) => {
                    if body.contains(find.as_str()) {
                        body = body.replace(find.as_str(), with);
                    }
                }
                EditOp::SetTitle(new_title) => {
                    if title != *new_title {
                        title.clone_from(new_title);
                    }
                }
            }
        }
        Applied { title, body }
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
        let out = edit.apply("Old", "<p>TODO: check</p>");
        assert_eq!(out.title, "New title");
        assert_eq!(out.body, "<p>Draft</p><p>DONE: check</p><p>Reviewed</p>");
        assert!(out.changes("Old", "<p>TODO: check</p>"));
    }

    #[test]
    fn applying_an_edit_to_its_own_result_changes_nothing() {
        let edit = Edit::from_json(DOC).unwrap();
        let once = edit.apply("Old", "<p>TODO</p>");
        let twice = edit.apply(&once.title, &once.body);
        assert_eq!(once, twice);
        assert!(!twice.changes(&once.title, &once.body));
    }

    #[test]
    fn an_append_already_at_the_end_is_not_repeated_but_one_elsewhere_is() {
        let edit = Edit::from_json(r#"[{"append": "<p>Reviewed</p>"}]"#).unwrap();
        // Already there, with trailing whitespace that Confluence may add.
        let same = edit.apply("T", "<p>a</p><p>Reviewed</p>\n");
        assert!(!same.changes("T", "<p>a</p><p>Reviewed</p>\n"));
        // Present, but not at the end: appended.
        let moved = edit.apply("T", "<p>Reviewed</p><p>a</p>");
        assert_eq!(moved.body, "<p>Reviewed</p><p>a</p><p>Reviewed</p>");
        // Prepend mirrors it.
        let pre = Edit::from_json(r#"[{"prepend": "<p>Draft</p>"}]"#).unwrap();
        assert!(
            !pre.apply("T", " <p>Draft</p><p>x</p>")
                .changes("T", " <p>Draft</p><p>x</p>")
        );
        assert_eq!(pre.apply("T", "<p>x</p>").body, "<p>Draft</p><p>x</p>");
    }

    #[test]
    fn a_replace_with_nothing_to_find_and_a_same_title_change_nothing() {
        let edit = Edit::from_json(
            r#"[{"replace": {"find": "TODO", "with": "DONE"}}, {"set_title": "T"}]"#,
        )
        .unwrap();
        assert!(!edit.apply("T", "<p>done</p>").changes("T", "<p>done</p>"));
        // Literal, not a pattern.
        let lit = Edit::from_json(r#"[{"replace": {"find": "a.c", "with": "X"}}]"#).unwrap();
        assert_eq!(lit.apply("T", "abc a.c").body, "abc X");
    }
}
