//! Request bodies into typed values, with errors in our own words.
//!
//! serde_json's messages repeat what the caller sent ("unknown field `…`", "invalid type: string
//! \"…\""), and a 400 body (or a log line) that repeats the caller's text can carry anything: markup,
//! control characters, a forged log line. [`parse_json`] is the one way a handler reads a JSON
//! body: its errors say what was wrong in fixed words, where (line and column), and name a field only
//! when the name is one of the target type's own.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::error::Category;

use crate::error::ApiError;

/// Parses `body` as JSON into `T`. `what` names the body in the answer, e.g. `"the install
/// payload"`: it is a `&'static str` so that it is always the app's own text.
///
/// The error is always [`ApiError::BadRequest`] with one of these reasons, and never any part of
/// the body:
///
/// - `<what> is empty`
/// - `<what> is not valid JSON (line L, column C)`
/// - `<what> ends too early (line L, column C)`
/// - `<what> has a value of the wrong type (line L, column C)`
/// - `<what> has an invalid value (line L, column C)`
/// - `<what> has an unknown field (line L, column C)`
/// - `<what> lacks the field `name`` when `name` is a field of `T` itself (its serialized name),
///   else `<what> lacks a required field (line L, column C)`
/// - `<what> has the field `name` twice`, or `<what> has a field twice (line L, column C)`
pub fn parse_json<T: DeserializeOwned>(body: &[u8], what: &'static str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(describe::<T>(&err, body, what)))
}

/// The fixed-words reason for a parse error of `body` into `T`.
fn describe<T: DeserializeOwned>(err: &serde_json::Error, body: &[u8], what: &str) -> String {
    let at = Position(err.line(), err.column());
    match err.classify() {
        Category::Eof if body.iter().all(u8::is_ascii_whitespace) => format!("{what} is empty"),
        Category::Eof => format!("{what} ends too early{at}"),
        Category::Syntax | Category::Io => format!("{what} is not valid JSON{at}"),
        Category::Data => {
            // Only the kind of error is read from serde's message (its fixed prefix); a field name
            // is used only when it is one of T's own, so nothing the caller wrote passes.
            let message = err.to_string();
            if message.starts_with("invalid type: ") {
                format!("{what} has a value of the wrong type{at}")
            } else if message.starts_with("unknown field `") {
                format!("{what} has an unknown field{at}")
            } else if let Some(rest) = message.strip_prefix("missing field `") {
                match own_field::<T>(rest) {
                    Some(name) => format!("{what} lacks the field `{name}`"),
                    None => format!("{what} lacks a required field{at}"),
                }
            } else if let Some(rest) = message.strip_prefix("duplicate field `") {
                match own_field::<T>(rest) {
                    Some(name) => format!("{what} has the field `{name}` twice"),
                    None => format!("{what} has a field twice{at}"),
                }
            } else {
                // invalid value, invalid length, unknown variant, a type's own check, …
                format!("{what} has an invalid value{at}")
            }
        }
    }
}

/// ` (line L, column C)`, or nothing when serde_json gives no position.
struct Position(usize, usize);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self(0, _) => Ok(()),
            Self(line, column) => write!(f, " (line {line}, column {column})"),
        }
    }
}

/// The field named at the start of `rest` (up to the closing backtick), as `T` itself spells it:
/// the `&'static str` from T's field list, never the text of the message.
fn own_field<T: DeserializeOwned>(rest: &str) -> Option<&'static str> {
    let name = rest.split('`').next()?;
    field_names::<T>()
        .iter()
        .copied()
        .find(|field| *field == name)
}

/// The names of `T`'s fields when `T` deserializes as a struct (derived `Deserialize`, after
/// `rename`/`rename_all`); empty for anything else. Found by asking `T` to deserialize from a
/// deserializer that records the field list serde hands to `deserialize_struct` and then stops.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// Ends the field-list probe; it carries nothing.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field list probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Self
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Install {
        client_key: String,
        version: Option<u64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        required: u64,
    }

    /// A type whose own check names a field that is not one of its own.
    #[derive(Debug)]
    struct Sneaky;

    impl<'de> Deserialize<'de> for Sneaky {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let _ = Value::deserialize(deserializer)?;
            Err(de::Error::missing_field("evil`name"))
        }
    }

    fn reason<T: DeserializeOwned + fmt::Debug>(body: &str) -> String {
        match parse_json::<T>(body.as_bytes(), "the install payload") {
            Err(ApiError::BadRequest(reason)) => reason,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_of_error_has_fixed_words_and_a_position() {
        assert_eq!(reason::<Install>(""), "the install payload is empty");
        assert_eq!(reason::<Install>(" \n "), "the install payload is empty");
        assert_eq!(
            reason::<Install>("{not json"),
            "the install payload is not valid JSON (line 1, column 2)"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "#),
            "the install payload ends too early (line 1, column 14)"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": 5}"#),
            "the install payload has a value of the wrong type (line 1, column 15)"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "k", "version": "3"}"#),
            "the install payload has a value of the wrong type (line 1, column 33)"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "k", "version": -1}"#),
            "the install payload has an invalid value (line 1, column 32)"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "k", "xyz": 1}"#),
            "the install payload has an unknown field (line 1, column 24)"
        );
        assert_eq!(
            reason::<Install>(r#"{"version": 1}"#),
            "the install payload lacks the field `clientKey`"
        );
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "k", "clientKey": "k"}"#),
            "the install payload has the field `clientKey` twice"
        );
        // A nested struct's field is not one of Install's own: not named.
        assert_eq!(
            reason::<Install>(r#"{"clientKey": "k", "inner": {}}"#),
            "the install payload lacks a required field (line 1, column 30)"
        );
        assert_eq!(
            reason::<Sneaky>("{}"),
            "the install payload lacks a required field"
        );
        assert_eq!(
            reason::<[u8; 2]>("[1]"),
            "the install payload has an invalid value (line 1, column 3)"
        );
    }

    #[test]
    fn nothing_the_caller_sent_is_repeated() {
        let marker = "MARKER<script>\u{1b}[31m";
        for body in [
            serde_json::json!({"clientKey": "k", "evil\nINFO forged line": marker}).to_string(),
            serde_json::json!({"clientKey": "k", "version": marker}).to_string(),
            serde_json::json!({"clientKey": ["k", marker]}).to_string(),
            serde_json::json!({"clientKey": "k", "inner": {"required": marker}}).to_string(),
            serde_json::json!({"clientKey": "k", "inner": {"evil\nINFO": 1}}).to_string(),
            format!("{{\"clientKey\": \"k\", {marker}"),
            format!("{{\"clientKey\": \"k\", \"evil\nINFO forged line\": {marker}}}"),
        ] {
            let said = reason::<Install>(&body);
            assert!(!said.contains("MARKER"), "{said}");
            assert!(!said.contains("evil"), "{said}");
            assert!(!said.contains("INFO"), "{said}");
            assert!(!said.chars().any(char::is_control), "{said}");
        }
    }

    #[test]
    fn a_valid_body_parses() {
        let install: Install = parse_json(
            br#"{"clientKey": "k", "version": 3}"#,
            "the install payload",
        )
        .unwrap();
        assert_eq!(
            (install.client_key.as_str(), install.version),
            ("k", Some(3))
        );
        let value: Value = parse_json(b"[1, 2]", "a list").unwrap();
        assert_eq!(value, serde_json::json!([1, 2]));
    }

    #[test]
    fn the_field_list_is_the_serialized_names_of_struct_types_only() {
        assert_eq!(field_names::<Install>(), ["clientKey", "version", "inner"]);
        assert!(field_names::<Value>().is_empty());
        assert!(field_names::<Vec<Install>>().is_empty());
    }
}
