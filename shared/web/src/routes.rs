//! The one route table: every HTTP route of the app, and the function that serves it.
//!
//! The functions' handlers answer the routes the table gives them (404 for any other path, 405 for
//! another method on one of theirs), the local app dispatches each request to the function that owns
//! its path, and the deployment test checks template.yaml's HTTP API routes and the descriptor's URLs
//! against this table. Each handler still parses its own path parameters (`{pageId}`, the event of
//! a webhook path).

use http::Method;

use crate::error::ApiError;

/// A function that serves HTTP routes (the edit worker serves none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// The descriptor and the lifecycle callbacks.
    Lifecycle,
    /// Page webhooks.
    Webhooks,
    /// The edit API and its page panel.
    EditApi,
    /// The site admins' page and its API.
    Admin,
}

impl Function {
    /// Every HTTP function.
    pub const ALL: [Self; 4] = [Self::Lifecycle, Self::Webhooks, Self::EditApi, Self::Admin];

    /// The binary that serves it on Lambda (template.yaml's `Metadata.BuildProperties.Binary`).
    pub fn binary(self) -> &'static str {
        match self {
            Self::Lifecycle => "lifecycle",
            Self::Webhooks => "webhooks",
            Self::EditApi => "edit-api",
            Self::Admin => "admin-api",
        }
    }
}

/// One route: a method, a path pattern as API Gateway writes it (`{name}` stands for one path
/// segment), and the function that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// `GET`, `POST` or `PUT`.
    pub method: &'static str,
    /// The path pattern, relative to the app's base URL.
    pub path: &'static str,
    /// Who serves it.
    pub function: Function,
}

const fn route(method: &'static str, path: &'static str, function: Function) -> Route {
    Route {
        method,
        path,
        function,
    }
}

/// `GET /atlassian-connect.json`: the descriptor.
pub const DESCRIPTOR: Route = route("GET", "/atlassian-connect.json", Function::Lifecycle);
/// `POST /installed`: a signed install.
pub const INSTALLED: Route = route("POST", "/installed", Function::Lifecycle);
/// `POST /uninstalled`: a signed uninstall.
pub const UNINSTALLED: Route = route("POST", "/uninstalled", Function::Lifecycle);
/// `POST /enabled`.
pub const ENABLED: Route = route("POST", "/enabled", Function::Lifecycle);
/// `POST /disabled`.
pub const DISABLED: Route = route("POST", "/disabled", Function::Lifecycle);
/// `POST /webhooks/page_created`.
pub const PAGE_CREATED: Route = route("POST", "/webhooks/page_created", Function::Webhooks);
/// `POST /webhooks/page_updated`.
pub const PAGE_UPDATED: Route = route("POST", "/webhooks/page_updated", Function::Webhooks);
/// `POST /webhooks/content_permissions_updated`.
pub const CONTENT_PERMISSIONS_UPDATED: Route = route(
    "POST",
    "/webhooks/content_permissions_updated",
    Function::Webhooks,
);
/// `POST /api/pages/{pageId}/edits`: an edit as the calling user.
pub const PAGE_EDITS: Route = route("POST", "/api/pages/{pageId}/edits", Function::EditApi);
/// `GET /api/pages/{pageId}/audit`: a page's audit records.
pub const PAGE_AUDIT: Route = route("GET", "/api/pages/{pageId}/audit", Function::EditApi);
/// `GET /ui/page`: the page-byline panel (an iframe).
pub const PAGE_PANEL: Route = route("GET", "/ui/page", Function::EditApi);
/// `GET /ui/admin`: the site admins' page (Connect `adminPages`, an iframe).
pub const ADMIN_PAGE: Route = route("GET", "/ui/admin", Function::Admin);
/// `GET /api/admin/settings`: the tenant's policy and rules, and the deployment's.
pub const ADMIN_SETTINGS: Route = route("GET", "/api/admin/settings", Function::Admin);
/// `PUT /api/admin/settings`: replaces the tenant's rules document (empty: the deployment's).
pub const ADMIN_SETTINGS_SAVE: Route = route("PUT", "/api/admin/settings", Function::Admin);
/// `GET /api/admin/blocked`: pages whose last attempt was blocked or failed.
pub const ADMIN_BLOCKED: Route = route("GET", "/api/admin/blocked", Function::Admin);
/// `POST /api/admin/retry`: queues a page's parked job again.
pub const ADMIN_RETRY: Route = route("POST", "/api/admin/retry", Function::Admin);
/// `GET /api/admin/audit`: the tenant's audit trail, filtered, paged, or as CSV.
pub const ADMIN_AUDIT: Route = route("GET", "/api/admin/audit", Function::Admin);
/// `GET /api/admin/queue`: jobs waiting and the tenant's dead letters.
pub const ADMIN_QUEUE: Route = route("GET", "/api/admin/queue", Function::Admin);
/// `POST /forge/lifecycle`: Forge's `avi:forge:installed:app` and `avi:forge:upgraded:app`.
pub const FORGE_LIFECYCLE: Route = route("POST", "/forge/lifecycle", Function::Lifecycle);
/// `POST /forge/scheduled`: the hourly scheduled trigger that hands over a fresh system token.
pub const FORGE_SCHEDULED: Route = route("POST", "/forge/scheduled", Function::Lifecycle);
/// `POST /forge/events`: Forge's page events.
pub const FORGE_EVENTS: Route = route("POST", "/forge/events", Function::Webhooks);

/// Every route of the app.
pub const ROUTES: &[Route] = &[
    DESCRIPTOR,
    INSTALLED,
    UNINSTALLED,
    ENABLED,
    DISABLED,
    PAGE_CREATED,
    PAGE_UPDATED,
    CONTENT_PERMISSIONS_UPDATED,
    PAGE_EDITS,
    PAGE_AUDIT,
    PAGE_PANEL,
    FORGE_LIFECYCLE,
    FORGE_SCHEDULED,
    FORGE_EVENTS,
    ADMIN_PAGE,
    ADMIN_SETTINGS,
    ADMIN_SETTINGS_SAVE,
    ADMIN_BLOCKED,
    ADMIN_RETRY,
    ADMIN_AUDIT,
    ADMIN_QUEUE,
];

impl Route {
    /// True when `path` (relative to the base URL) has this route's shape.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// The value of the parameter `{name}` in `path`, when `path` matches.
    pub fn param<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let mut value = None;
        let matched = self.walk(path, |param, got| {
            if param == name && value.is_none() {
                value = Some(got);
            }
        });
        if matched { value } else { None }
    }

    /// Whether `path` matches, telling `on_param` each parameter's `(name, value)` on the way. A
    /// parameter matches any one segment, the empty one included: its handler says what is wrong
    /// with it. Nothing is allocated: every request is routed through here twice (its owner, then
    /// its route).
    fn walk<'p>(&self, path: &'p str, mut on_param: impl FnMut(&'static str, &'p str)) -> bool {
        if !self.path.contains('{') {
            return self.path == path;
        }
        let mut pattern = self.path.split('/');
        let mut given = path.split('/');
        loop {
            match (pattern.next(), given.next()) {
                (None, None) => return true,
                (Some(want), Some(got)) => {
                    match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                        Some(name) => on_param(name, got),
                        None if want == got => {}
                        None => return false,
                    }
                }
                _ => return false,
            }
        }
    }
}

/// The function that serves `path` (relative to the base URL), whatever the method: where API
/// Gateway, or the local app, sends the request.
pub fn owner(path: &str) -> Option<Function> {
    ROUTES
        .iter()
        .find(|route| route.matches(path))
        .map(|route| route.function)
}

/// The route of `function` for `method` on `path`: 404 when none of its routes has this path, 405
/// when only other methods do.
pub fn resolve(function: Function, method: &Method, path: &str) -> Result<Route, ApiError> {
    let mut other_method = false;
    for route in ROUTES
        .iter()
        .filter(|r| r.function == function && r.matches(path))
    {
        if route.method == method.as_str() {
            return Ok(*route);
        }
        other_method = true;
    }
    Err(if other_method {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NotFound
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_unique_and_owned_by_one_function() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in ROUTES.iter().skip(i + 1) {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?} twice");
                if a.path == b.path {
                    assert_eq!(a.function, b.function, "{} has two owners", a.path);
                }
            }
        }
        for function in Function::ALL {
            assert!(ROUTES.iter().any(|r| r.function == function));
        }
    }

    #[test]
    fn patterns_match_one_segment_per_parameter() {
        assert_eq!(
            PAGE_EDITS.param("/api/pages/42/edits", "pageId"),
            Some("42")
        );
        assert_eq!(PAGE_EDITS.param("/api/pages//edits", "pageId"), Some(""));
        assert!(!PAGE_EDITS.matches("/api/pages/4/2/edits"));
        assert!(!PAGE_EDITS.matches("/api/pages/42/edits/"));
        assert!(!PAGE_EDITS.matches("/api/pages/42"));
        assert!(PAGE_PANEL.matches("/ui/page"));
        assert!(!PAGE_PANEL.matches("/ui/page/x"));
        assert!(!PAGE_PANEL.matches("/ui/page/"));
        assert!(!PAGE_PANEL.matches("/ui"));
        assert!(PAGE_AUDIT.matches("/api/pages/{pageId}/audit"));
        assert_eq!(PAGE_AUDIT.param("/api/pages/7/audit", "other"), None);
        assert_eq!(PAGE_AUDIT.param("/api/pages/7/edits", "pageId"), None);
    }

    #[test]
    fn resolving_tells_unknown_paths_from_other_methods_and_other_functions() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            resolve(Function::Lifecycle, &post, "/installed").ok(),
            Some(INSTALLED)
        );
        assert!(matches!(
            resolve(Function::Lifecycle, &get, "/installed"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            resolve(Function::Lifecycle, &post, "/webhooks/page_created"),
            Err(ApiError::NotFound)
        ));
        assert_eq!(
            resolve(Function::EditApi, &get, "/api/pages/7/audit").ok(),
            Some(PAGE_AUDIT)
        );
        assert!(matches!(
            resolve(Function::EditApi, &get, "/api/pages/7/edits"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert_eq!(owner("/webhooks/page_updated"), Some(Function::Webhooks));
        assert_eq!(owner("/api/pages/7/audit"), Some(Function::EditApi));
        assert_eq!(owner("/atlassian-connect.json"), Some(Function::Lifecycle));
        assert_eq!(owner("/webhooks/other"), None);
        assert_eq!(owner("/"), None);
    }
}
