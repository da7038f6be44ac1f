//! Webhook bodies: lenient where Confluence is known to vary, strict everywhere else. Refusals
//! say what was wrong in fixed words, never with the caller's text.

use serde::Deserialize;
use serde_json::Value;
use understudy_domain::{AccountId, PageId};
use understudy_web::{ApiError, parse_json};

use understudy_core::WebhookEvent;

/// What the app needs from a page event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageEvent {
    /// The page (or content) the event is about.
    pub page_id: PageId,
    /// Its title, when sent.
    pub title: Option<String>,
    /// Its space key, when sent.
    pub space_key: Option<String>,
    /// The version the event announces, when sent.
    pub version: Option<u64>,
    /// The user who acted, when a user did.
    pub user: Option<AccountId>,
    /// `customer` or `app`, when sent.
    pub account_type: Option<String>,
    /// Confluence's timestamp of the event (unix milliseconds), when sent.
    pub timestamp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    user_account_id: Option<String>,
    account_type: Option<String>,
    timestamp: Option<i64>,
    page: Option<Content>,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    id_as_string: Option<String>,
    id: Option<Value>,
    title: Option<String>,
    space_key: Option<String>,
    version: Option<u64>,
}

/// A Forge product event, as the app needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeEvent {
    /// The event (`avi:confluence:updated:page` is [`WebhookEvent::PageUpdated`], ...).
    pub event: WebhookEvent,
    /// The page and who acted (`atlassianId`).
    pub page: PageEvent,
    /// `selfGenerated`: the app itself caused it.
    pub self_generated: bool,
    /// The event without Forge's `retryContext`: the same for every delivery of one event.
    pub identity: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForgeBody {
    event_type: String,
    atlassian_id: Option<String>,
    #[serde(default)]
    self_generated: bool,
    content: Option<ForgeContent>,
}

#[derive(Deserialize)]
struct ForgeContent {
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    space: Option<ForgeSpace>,
    version: Option<ForgeVersion>,
}

#[derive(Deserialize)]
struct ForgeSpace {
    key: Option<String>,
}

#[derive(Deserialize)]
struct ForgeVersion {
    number: Option<u64>,
}

/// Parses a Forge product event (docs/protocol.md §17). The body is the event itself, or the
/// event wrapped as `{"payload": <event>, "context": ...}`: Atlassian does not document which a
/// remote receives, so both are read.
pub fn parse_forge(body: &[u8]) -> Result<ForgeEvent, ApiError> {
    let whole: Value = parse_json(body, "the Forge event")?;
    let mut event = match whole {
        Value::Object(mut map) if !map.contains_key("eventType") => match map.remove("payload") {
            Some(inner @ Value::Object(_)) => inner,
            _ => {
                return Err(ApiError::BadRequest(
                    "the Forge event has no eventType".into(),
                ));
            }
        },
        other @ Value::Object(_) => other,
        _ => {
            return Err(ApiError::BadRequest(
                "the Forge event is not a JSON object".into(),
            ));
        }
    };
    if let Value::Object(map) = &mut event {
        map.remove("retryContext");
    }
    let parsed: ForgeBody = serde_json::from_value(event.clone()).map_err(|_| {
        ApiError::BadRequest("the Forge event has a field of the wrong type or no eventType".into())
    })?;
    let kind = WebhookEvent::from_forge_name(&parsed.event_type).ok_or_else(|| {
        ApiError::BadRequest("not a Forge page event this app subscribes to".into())
    })?;
    let content = parsed
        .content
        .ok_or_else(|| ApiError::BadRequest("the Forge event has no content".into()))?;
    if content.kind.as_deref().is_some_and(|k| k != "page") {
        return Err(ApiError::BadRequest(
            "the Forge event's content is not a page".into(),
        ));
    }
    let raw_id = match content.id {
        Some(Value::String(id)) => id,
        Some(Value::Number(id)) => id.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "the Forge event's content has no id (a string or a whole number)".into(),
            ));
        }
    };
    let page_id = PageId::parse(raw_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let user = match parsed.atlassian_id.filter(|u| !u.is_empty()) {
        Some(id) => Some(AccountId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        None => None,
    };
    Ok(ForgeEvent {
        event: kind,
        page: PageEvent {
            page_id,
            title: content.title,
            space_key: content.space.and_then(|s| s.key),
            version: content.version.and_then(|v| v.number),
            user,
            account_type: None,
            timestamp: None,
        },
        self_generated: parsed.self_generated,
        identity: event,
    })
}

/// Parses a page webhook body. `page.idAsString` first, then `page.id` as a number or a string
/// (older captures sent numbers); `content_permissions_updated` names its subject `content`.
pub fn parse(event: WebhookEvent, body: &[u8]) -> Result<PageEvent, ApiError> {
    let body: Body = parse_json(body, "the page event")?;
    let content = match event {
        WebhookEvent::ContentPermissionsUpdated => body.content.or(body.page),
        _ => body.page,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the {event} event has no {}",
            if event == WebhookEvent::ContentPermissionsUpdated {
                "content"
            } else {
                "page"
            }
        ))
    })?;
    let raw_id = match (content.id_as_string, content.id) {
        (Some(id), _) => id,
        (None, Some(Value::String(id))) => id,
        (None, Some(Value::Number(id))) => id.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "the page event's page has no id (a string or a whole number)".into(),
            ));
        }
    };
    // ParseError says which kind of value was refused and why, in fixed words.
    let page_id = PageId::parse(raw_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let user = match body.user_account_id.filter(|u| !u.is_empty()) {
        Some(id) => Some(AccountId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        None => None,
    };
    Ok(PageEvent {
        page_id,
        title: content.title,
        space_key: content.space_key,
        version: content.version,
        user,
        account_type: body.account_type,
        timestamp: body.timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGE_EVENT: &str = r#"{"eventType": "avi:confluence:updated:page", "atlassianId": "u-1",
      "selfGenerated": false, "updateTrigger": "edit_page",
      "content": {"id": "42", "type": "page", "status": "current", "title": "T",
                  "space": {"id": 7, "key": "DOCS"}, "version": {"number": 3}}}"#;

    #[test]
    fn a_forge_event_parses_bare_or_wrapped_and_without_its_retry_context() {
        let bare = parse_forge(FORGE_EVENT.as_bytes()).unwrap();
        assert_eq!(bare.event, WebhookEvent::PageUpdated);
        assert_eq!(bare.page.page_id.as_str(), "42");
        assert_eq!(bare.page.space_key.as_deref(), Some("DOCS"));
        assert_eq!(bare.page.version, Some(3));
        assert_eq!(bare.page.user.as_ref().unwrap().as_str(), "u-1");
        assert!(!bare.self_generated);
        let wrapped = format!(r#"{{"payload": {FORGE_EVENT}, "context": {{"cloudId": "c"}}}}"#);
        assert_eq!(parse_forge(wrapped.as_bytes()).unwrap(), bare);
        let mut retried: Value = serde_json::from_str(FORGE_EVENT).unwrap();
        retried["retryContext"] = serde_json::json!({"attempt": 2, "retryReason": "TIMEOUT"});
        let retried = parse_forge(retried.to_string().as_bytes()).unwrap();
        assert_eq!(retried.identity, bare.identity);
    }

    #[test]
    fn forge_events_of_other_kinds_or_shapes_are_refused() {
        for body in [
            "[]",
            "{}",
            r#"{"payload": 1}"#,
            r#"{"eventType": "avi:jira:created:issue", "content": {"id": "1"}}"#,
            r#"{"eventType": "avi:confluence:created:page"}"#,
            r#"{"eventType": "avi:confluence:created:page", "content": {"id": "1", "type": "blogpost"}}"#,
            r#"{"eventType": "avi:confluence:created:page", "content": {"id": "../1"}}"#,
            r#"{"eventType": "avi:confluence:created:page", "content": {"id": "1"}, "atlassianId": "bad id"}"#,
        ] {
            assert!(parse_forge(body.as_bytes()).is_err(), "{body}");
        }
    }

    const CAPTURED: &str = r#"{"userAccountId": "557058:f3b2", "accountType": "customer",
      "updateTrigger": "edit_page", "suppressNotifications": false,
      "page": {"idAsString": "1188560897", "id": 1188560897, "title": "Release 1.0", "spaceKey": "DOCS",
               "spaceId": 1149861892, "contentType": "page", "version": 2, "creatorAccountId": "557058:f3b2",
               "lastModifierAccountId": "557058:f3b2", "creationDate": 1631605030794,
               "modificationDate": 1631606188966, "self": "https://x.atlassian.net/wiki/spaces/DOCS/pages/1188560897"},
      "timestamp": 1631606188983}"#;

    #[test]
    fn a_captured_page_event_parses() {
        let e = parse(WebhookEvent::PageUpdated, CAPTURED.as_bytes()).unwrap();
        assert_eq!(e.page_id.as_str(), "1188560897");
        assert_eq!(e.title.as_deref(), Some("Release 1.0"));
        assert_eq!(e.space_key.as_deref(), Some("DOCS"));
        assert_eq!(e.version, Some(2));
        assert_eq!(e.user.unwrap().as_str(), "557058:f3b2");
        assert_eq!(e.timestamp, Some(1631606188983));
    }

    #[test]
    fn the_page_id_may_be_a_number_or_a_string() {
        for body in [
            r#"{"page": {"id": 42}}"#,
            r#"{"page": {"id": "42"}}"#,
            r#"{"page": {"idAsString": "42", "id": 7}}"#,
        ] {
            assert_eq!(
                parse(WebhookEvent::PageCreated, body.as_bytes())
                    .unwrap()
                    .page_id
                    .as_str(),
                "42",
                "{body}"
            );
        }
        let perms = r#"{"content": {"id": 99, "title": "T"}, "userAccountId": "u-1"}"#;
        assert_eq!(
            parse(WebhookEvent::ContentPermissionsUpdated, perms.as_bytes())
                .unwrap()
                .page_id
                .as_str(),
            "99"
        );
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"page": {}}"#,
            r#"{"page": {"id": "../1"}}"#,
            r#"{"page": {"id": 1.5}}"#,
            r#"{"page": {"id": 1, "version": "two"}}"#,
            r#"{"page": {"id": 1}, "userAccountId": "bad user"}"#,
        ] {
            assert!(
                parse(WebhookEvent::PageUpdated, body.as_bytes()).is_err(),
                "{body}"
            );
        }
    }

    fn refusal(body: &str) -> String {
        match parse(WebhookEvent::PageUpdated, body.as_bytes()) {
            Err(ApiError::BadRequest(reason)) => reason,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn refusals_never_repeat_the_body() {
        for body in [
            r#"{"page": {"id": 1, "version": "MARKER"}}"#,
            r#"{"page": {"id": 1, "title": ["MARKER"]}, "evil
INFO forged line": 1}"#,
            r#"{"page": {"id": "MARKER"}}"#,
            r#"{"page": {"id": 1}, "userAccountId": "MARKER bad user"}"#,
            r#"{"page": {"id": 1}, "timestamp": "MARKER"}"#,
            r#"{"page": {"id": ["MARKER"]}}"#,
            "{\"page\": MARKER}",
        ] {
            let said = refusal(body);
            assert!(!said.contains("MARKER"), "{body}: {said}");
            assert!(
                !said.contains("evil") && !said.contains('\n'),
                "{body}: {said}"
            );
        }
        assert_eq!(
            refusal(r#"{"page": {"id": 1, "version": "two"}}"#),
            "the page event has a value of the wrong type (line 1, column 35)"
        );
        assert_eq!(refusal("{}"), "the page_updated event has no page");
    }
}
