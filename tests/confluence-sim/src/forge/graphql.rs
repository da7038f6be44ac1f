//! `POST /graphql`, Atlassian's GraphQL gateway, as far as a Forge Remote uses it: the
//! `offlineUserAuthToken` mutation (offline user impersonation, shared/reference/forge-remote.md §4).
//!
//! Request: `Authorization: Bearer <app system token>` and
//! `{"query": "mutation($input: ...) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }",
//!   "variables": {"input": {"contextIds": ["ari:cloud:confluence::site/<cloudId>"], "userId": "<accountId>"}}}`
//! (the input may be written inline in the query too, with or without variables inside it).
//!
//! Answer: 200 `{"data": {"offlineUserAuthToken": {"success": true, "errors": null,
//! "authToken": {"token": "<opaque>", "ttl": <seconds>}}}}`, or `success: false` with
//! `errors: [{"message"}]` and `authToken: null` for an unknown or deactivated user, an app user, a
//! `contextIds` that is not exactly the site's ARI, or a user the test refused
//! ([`crate::Simulator::forge_reject_offline_for`]). No valid system token: 401.

use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Incoming};
use crate::confluence::json_response;
use crate::faults::Fault;
use crate::forge::gateway::{bearer, expire_presented_token, forge_caller, unauthorized};
use crate::forge::{ForgeTokenKind, OfflineTokenExchange, site_context_ari};
use crate::model::AccountType;
use crate::state::{Shared, State};

/// The mutation served.
const MUTATION: &str = "offlineUserAuthToken";

fn graphql_errors(status: u16, message: &str) -> Response {
    json_response(
        status,
        &json!({"data": null, "errors": [{"message": message,
                 "extensions": {"classification": "ValidationError"}}]}),
    )
}

/// Answers `POST /graphql`; returns the answer and who asked. `state` is locked by the caller.
pub(crate) fn handle(
    shared: &Shared,
    state: &mut State,
    request: Incoming<'_>,
    body: &[u8],
    fault: Option<&Fault>,
) -> (Response, Option<String>) {
    let now = shared.now();
    if request.method != "POST" {
        return (graphql_errors(405, "the GraphQL gateway takes POST"), None);
    }
    if fault == Some(&Fault::ExpiredToken) {
        expire_presented_token(state, &request, now);
        return (unauthorized("token expired"), None);
    }
    let (installation_id, described) = match bearer(&request)
        .ok_or("a Bearer token is required")
        .and_then(|token| forge_caller(state, &token, now))
    {
        Ok(
            caller @ Caller::Forge {
                kind: ForgeTokenKind::System,
                ..
            },
        ) => {
            let id = state
                .forge
                .current()
                .map(|i| i.installation_id.clone())
                .unwrap_or_default();
            (id, caller.describe())
        }
        Ok(_) => return (unauthorized("an app system token is required"), None),
        Err(reason) => return (unauthorized(reason), None),
    };
    let described = Some(described);
    let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(body) else {
        return (
            graphql_errors(400, "the body must be a JSON object"),
            described,
        );
    };
    let Some(query) = document.get("query").and_then(Value::as_str) else {
        return (
            graphql_errors(400, "`query` (a string) is required"),
            described,
        );
    };
    let variables = match document.get("variables") {
        Some(Value::Object(v)) => v.clone(),
        _ => Map::new(),
    };
    if !query.contains(MUTATION) {
        return (
            graphql_errors(
                200,
                "the simulator's GraphQL gateway serves only offlineUserAuthToken",
            ),
            described,
        );
    }
    let Some(input) = mutation_input(query, &variables) else {
        return (
            graphql_errors(
                200,
                "offlineUserAuthToken needs input: {contextIds: [...], userId: \"...\"}",
            ),
            described,
        );
    };
    let context_ids: Vec<String> = input
        .get("contextIds")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let account_id = input
        .get("userId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let outcome = exchange(shared, state, &context_ids, account_id.as_deref(), now);
    state.forge.exchanges.push(OfflineTokenExchange {
        installation_id,
        account_id,
        context_ids,
        success: outcome.is_ok(),
        error: outcome.as_ref().err().map(|e| (*e).to_owned()),
        ttl: outcome.as_ref().ok().map(|(_, ttl)| *ttl),
        at: now,
    });
    let answer = match outcome {
        Ok((token, ttl)) => json!({"success": true, "errors": null,
                                   "authToken": {"token": token, "ttl": ttl}}),
        Err(message) => json!({"success": false, "errors": [{"message": message}],
                               "authToken": null}),
    };
    (
        json_response(200, &json!({"data": {MUTATION: answer}})),
        described,
    )
}

/// Issues an offline token, or says why not.
fn exchange(
    shared: &Shared,
    state: &mut State,
    context_ids: &[String],
    account_id: Option<&str>,
    now: i64,
) -> Result<(String, i64), &'static str> {
    let site = site_context_ari(&state.cloud_id);
    if context_ids != [site] {
        return Err("contextIds must be exactly the installation's site");
    }
    let account_id = account_id.ok_or("userId is required")?;
    let user = state
        .content
        .users
        .get(account_id)
        .ok_or("No user with this accountId")?;
    if !user.active {
        return Err("The user is deactivated");
    }
    if user.account_type != AccountType::Customer {
        return Err("App users cannot be impersonated");
    }
    if state.forge.rejected_offline.contains(account_id) {
        return Err("The user cannot be impersonated by this app");
    }
    let ttl = shared.config.forge.offline_token_ttl_seconds;
    let token = state
        .forge
        .mint(ForgeTokenKind::Offline, account_id, now, ttl)
        .ok_or("The app is not installed")?;
    Ok((token, ttl))
}

/// The `input` argument of the mutation, variables resolved.
fn mutation_input(query: &str, variables: &Map<String, Value>) -> Option<Map<String, Value>> {
    // The name may appear elsewhere first (an operation named after it): try each occurrence.
    query.match_indices(MUTATION).find_map(|(at, _)| {
        let rest = query.get(at + MUTATION.len()..)?;
        let mut parser = Parser {
            chars: rest.chars().collect(),
            at: 0,
            variables,
        };
        match parser.arguments()?.remove("input")? {
            Value::Object(input) => Some(input),
            _ => None,
        }
    })
}

/// Reads GraphQL argument values: objects, lists, strings, variables and bare words; enough for
/// the mutation's input, written inline or as variables.
struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    variables: &'a Map<String, Value>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ignored(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.at += 1;
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, wanted: char) -> Option<()> {
        self.skip_ignored();
        (self.peek()? == wanted).then(|| self.at += 1)
    }

    fn name(&mut self) -> Option<String> {
        self.skip_ignored();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        (self.at > start).then(|| {
            self.chars
                .get(start..self.at)
                .unwrap_or_default()
                .iter()
                .collect()
        })
    }

    /// `(name: value, ...)`.
    fn arguments(&mut self) -> Option<Map<String, Value>> {
        self.eat('(')?;
        let mut out = Map::new();
        loop {
            self.skip_ignored();
            if self.peek()? == ')' {
                return Some(out);
            }
            let name = self.name()?;
            self.eat(':')?;
            let value = self.value(0)?;
            out.insert(name, value);
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > 32 {
            return None;
        }
        self.skip_ignored();
        match self.peek()? {
            '$' => {
                self.at += 1;
                let name = self.name()?;
                Some(self.variables.get(&name).cloned().unwrap_or(Value::Null))
            }
            '"' => self.string().map(Value::from),
            '[' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ignored();
                    if self.peek()? == ']' {
                        self.at += 1;
                        return Some(Value::Array(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            '{' => {
                self.at += 1;
                let mut members = Map::new();
                loop {
                    self.skip_ignored();
                    if self.peek()? == '}' {
                        self.at += 1;
                        return Some(Value::Object(members));
                    }
                    let name = self.name()?;
                    self.eat(':')?;
                    let value = self.value(depth + 1)?;
                    members.insert(name, value);
                }
            }
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.')
                }) {
                    self.at += 1;
                }
                let word: String = self.chars.get(start..self.at)?.iter().collect();
                match word.as_str() {
                    "" => None,
                    "null" => Some(Value::Null),
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => Some(
                        serde_json::from_str::<serde_json::Number>(&word)
                            .map_or(Value::String(word), Value::Number),
                    ),
                }
            }
        }
    }

    /// A `"..."` string with the usual escapes.
    fn string(&mut self) -> Option<String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.at += 1;
            match c {
                '"' => return Some(out),
                '\\' => {
                    let escaped = self.peek()?;
                    self.at += 1;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'u' => {
                            let hex: String =
                                self.chars.get(self.at..self.at + 4)?.iter().collect();
                            self.at += 4;
                            out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_input_is_read_from_variables_or_inline() {
        let vars = json!({"input": {"contextIds": ["a"], "userId": "u"}, "uid": "v"});
        let vars = vars.as_object().unwrap();
        let by_variable = mutation_input(
            "mutation offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success } }",
            vars,
        )
        .unwrap();
        assert_eq!(by_variable["userId"], "u");
        let inline = mutation_input(
            "mutation { offlineUserAuthToken(input: {contextIds: [\"ari:x\"], userId: $uid}) { success } }",
            vars,
        )
        .unwrap();
        assert_eq!(inline["contextIds"], json!(["ari:x"]));
        assert_eq!(inline["userId"], "v");
        assert!(mutation_input("{ offlineUserAuthToken { success } }", vars).is_none());
        assert!(mutation_input("{ offlineUserAuthToken(input: {userId: \"", vars).is_none());
    }
}
