//! Endpoints (to count requests and to aim faults) and the faults that can be injected.

use std::time::Duration;

use serde::Serialize;

/// A kind of request the simulator answers. Used to count requests and to aim faults.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Every request (as a fault target).
    Any,
    /// Every request to Confluence's REST API under `/wiki` (as a fault target).
    AnyConfluence,
    /// `GET /wiki/api/v2/pages/{id}`.
    GetPage,
    /// `PUT /wiki/api/v2/pages/{id}`.
    UpdatePage,
    /// `GET /wiki/rest/api/content/{id}/restriction/byOperation`.
    GetRestrictions,
    /// `GET /wiki/rest/api/content/{id}/restriction/byOperation/{op}/user`.
    GetRestrictionUser,
    /// `PUT /wiki/rest/api/content/{id}/restriction/byOperation/{op}/user`.
    AddRestrictionUser,
    /// `DELETE /wiki/rest/api/content/{id}/restriction/byOperation/{op}/user`.
    RemoveRestrictionUser,
    /// `POST /wiki/rest/api/content/{id}/permission/check`.
    PermissionCheck,
    /// `GET /wiki/rest/api/user/current`.
    CurrentUser,
    /// `GET /wiki/rest/api/user?accountId=…` (with `expand=operations`: what the user may do).
    GetUser,
    /// Any other path under `/wiki` (answered 404 like an unknown route).
    OtherConfluence,
    /// `POST /oauth2/token` on the OAuth server.
    OAuthToken,
    /// `GET /keys/{kid}` on the install key server.
    InstallKey,
    /// The simulator's own admin API under `/_sim` (never faulted).
    Admin,
    /// A request through Forge's API gateway, `/ex/confluence/{cloudId}/wiki/...`: the Confluence
    /// endpoint its path maps to (`ForgeRest(Box::new(Endpoint::GetPage))` for
    /// `GET /ex/confluence/{cloudId}/wiki/api/v2/pages/{id}`). As a target, the inner endpoint is
    /// matched against the mapped path, so `ForgeRest(Box::new(Endpoint::AnyConfluence))` works.
    /// Gateway requests never match the Connect endpoints (`GetPage`, `AnyConfluence`, ...).
    ForgeRest(Box<Endpoint>),
    /// Every request through Forge's API gateway (as a target, and to count "Forge REST" calls).
    AnyForgeRest,
    /// `/graphql`, the GraphQL gateway (`offlineUserAuthToken`).
    ForgeGraphql,
    /// `GET /.well-known/jwks.json`, the Forge JWKS.
    ForgeJwks,
    /// `/app/report-accounts/` (or without the trailing slash): Atlassian's personal data
    /// reporting API ([`crate::Simulator::report_accounts_url`]).
    ReportAccounts,
    /// Anything else.
    Unknown,
    /// A fault target: requests whose method (if given) matches and whose path contains `contains`.
    Path {
        /// Upper-case method, or `None` for any.
        method: Option<String>,
        /// A substring of the raw path.
        contains: String,
    },
}

impl Endpoint {
    /// The concrete endpoint of a request.
    pub fn classify(method: &str, path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["wiki", "api", "v2", "pages", _]) => Self::GetPage,
            ("PUT", ["wiki", "api", "v2", "pages", _]) => Self::UpdatePage,
            (
                "GET",
                [
                    "wiki",
                    "rest",
                    "api",
                    "content",
                    _,
                    "restriction",
                    "byOperation",
                ],
            ) => Self::GetRestrictions,
            (
                m,
                [
                    "wiki",
                    "rest",
                    "api",
                    "content",
                    _,
                    "restriction",
                    "byOperation",
                    _,
                    "user",
                ],
            ) => match m {
                "GET" => Self::GetRestrictionUser,
                "PUT" => Self::AddRestrictionUser,
                "DELETE" => Self::RemoveRestrictionUser,
                _ => Self::OtherConfluence,
            },
            ("POST", ["wiki", "rest", "api", "content", _, "permission", "check"]) => {
                Self::PermissionCheck
            }
            ("GET", ["wiki", "rest", "api", "user", "current"]) => Self::CurrentUser,
            ("GET", ["wiki", "rest", "api", "user"]) => Self::GetUser,
            (_, ["ex", "confluence", _, ..]) => {
                Self::ForgeRest(Box::new(Self::classify(method, gateway_inner_path(path))))
            }
            (_, ["graphql"]) => Self::ForgeGraphql,
            ("GET", [".well-known", "jwks.json"]) => Self::ForgeJwks,
            (_, ["app", "report-accounts"] | ["app", "report-accounts", ""]) => {
                Self::ReportAccounts
            }
            (_, ["wiki", ..]) => Self::OtherConfluence,
            (_, ["oauth2", "token"]) => Self::OAuthToken,
            (_, ["keys", ..]) => Self::InstallKey,
            (_, ["_sim", ..]) => Self::Admin,
            _ => Self::Unknown,
        }
    }

    /// Does this (a target) match a request to `concrete`?
    pub(crate) fn matches(&self, concrete: &Endpoint, method: &str, path: &str) -> bool {
        if *concrete == Self::Admin {
            return false;
        }
        match self {
            Self::Any => true,
            Self::AnyConfluence => path == "/wiki" || path.starts_with("/wiki/"),
            Self::AnyForgeRest => matches!(concrete, Self::ForgeRest(_)),
            Self::ForgeRest(target) => match concrete {
                Self::ForgeRest(inner) => target.matches(inner, method, gateway_inner_path(path)),
                _ => false,
            },
            Self::Path {
                method: wanted,
                contains,
            } => {
                wanted
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                    && path.contains(contains.as_str())
            }
            other => other == concrete,
        }
    }
}

/// The path a gateway path maps to: `/ex/confluence/{cloudId}/wiki/x` → `/wiki/x` (`/` when nothing
/// follows the cloudId).
pub(crate) fn gateway_inner_path(path: &str) -> &str {
    let mut rest = path.trim_start_matches('/');
    for _ in 0..3 {
        rest = rest.split_once('/').map_or("", |(_, tail)| tail);
    }
    // `rest` is a suffix of `path`, so the slash before it is there too.
    match path.len().checked_sub(rest.len() + 1) {
        Some(start) if !rest.is_empty() => path.get(start..).unwrap_or("/"),
        _ => "/",
    }
}

/// A fault to inject into the next matching requests ([`crate::Simulator::fail_next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests`, with `Retry-After: <seconds>` (and Atlassian's `X-RateLimit-*`
    /// headers) when given, with no hint at all otherwise.
    TooManyRequests {
        /// Seconds to wait, if the answer says.
        retry_after: Option<u64>,
    },
    /// `503 Service Unavailable`, with `Retry-After` when given (Atlassian rate-limits with 503 too).
    ServiceUnavailable {
        /// Seconds to wait, if the answer says.
        retry_after: Option<u64>,
    },
    /// A 5xx (or any) status with an opaque body.
    ServerError(u16),
    /// Wait this long, then answer normally (the work still happens, as on a slow server whose
    /// caller gave up).
    Slow(Duration),
    /// The bearer token (or app JWT) on the request is treated as expired: a bearer token is expired
    /// for good, and the answer is 401.
    ExpiredToken,
    /// On the OAuth server: `400 invalid_grant` for this exchange.
    RejectGrant,
    /// On a page update: a person edits the page just before the request is handled, so a version
    /// computed before is stale (409), as in a real race. The person's edit fires `page_updated`.
    ConcurrentEdit,
}

/// A fault waiting for its requests.
#[derive(Debug, Clone)]
pub(crate) struct ArmedFault {
    pub target: Endpoint,
    pub fault: Fault,
    pub remaining: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_paths_map_to_confluence_paths() {
        assert_eq!(
            gateway_inner_path("/ex/confluence/c1/wiki/api/v2/pages/1"),
            "/wiki/api/v2/pages/1"
        );
        assert_eq!(gateway_inner_path("/ex/confluence/c1/wiki"), "/wiki");
        assert_eq!(gateway_inner_path("/ex/confluence/c1"), "/");
        assert_eq!(gateway_inner_path("/ex/confluence/c1/"), "/");
        assert_eq!(
            Endpoint::classify("PUT", "/ex/confluence/c1/wiki/api/v2/pages/1"),
            Endpoint::ForgeRest(Box::new(Endpoint::UpdatePage))
        );
        assert_eq!(
            Endpoint::classify("GET", "/ex/confluence/c1/graphql"),
            Endpoint::ForgeRest(Box::new(Endpoint::ForgeGraphql))
        );
        let target = Endpoint::ForgeRest(Box::new(Endpoint::AnyConfluence));
        let concrete = Endpoint::classify("GET", "/ex/confluence/c1/wiki/x");
        assert!(target.matches(&concrete, "GET", "/ex/confluence/c1/wiki/x"));
        assert!(!Endpoint::AnyConfluence.matches(&concrete, "GET", "/ex/confluence/c1/wiki/x"));
        assert!(Endpoint::AnyForgeRest.matches(&concrete, "GET", "/ex/confluence/c1/wiki/x"));
    }
}
