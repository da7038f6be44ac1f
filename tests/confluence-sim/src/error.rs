//! What can go wrong when driving the simulator from a test.

/// An error of the simulator's API (never of a request it answers: those get HTTP statuses).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The listener could not be bound.
    #[error("could not bind 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client for calls to apps could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(String),
    /// An unknown user.
    #[error("no user with accountId {0}")]
    UnknownUser(String),
    /// An unknown space.
    #[error("no space with key {0}")]
    UnknownSpace(String),
    /// An unknown page.
    #[error("no page with id {0}")]
    UnknownPage(String),
    /// An unknown group.
    #[error("no group named {0}")]
    UnknownGroup(String),
    /// No app with this key was ever installed.
    #[error("no app with key {0} is installed")]
    UnknownApp(String),
    /// The simulator only ever calls loopback hosts.
    #[error("{0} is not a URL on 127.0.0.1, ::1 or localhost; the simulator calls nothing else")]
    NotLoopback(String),
    /// The app's descriptor could not be fetched or is not a usable Connect descriptor.
    #[error("descriptor: {0}")]
    Descriptor(String),
    /// A call to the app failed before it answered.
    #[error("calling the app ({url}): {reason}")]
    AppUnreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The app answered a lifecycle callback with a non-2xx status: the install failed.
    #[error("the app answered {status} to `{event}`: {body}")]
    CallbackRefused {
        /// The lifecycle event.
        event: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The acting user may not do this (Confluence would answer 403 or 404).
    #[error("{0}")]
    NotPermitted(String),
    /// The request makes no sense (a duplicate title, an app in the wrong state, ...).
    #[error("{0}")]
    Invalid(String),
    /// A token could not be signed (a broken key in the configuration).
    #[error("signing failed: {0}")]
    Signing(&'static str),
}
