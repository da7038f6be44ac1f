//! How a simulator is set up, its install signing keys, and a clock tests can move.

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use connect_auth::{ATLASSIAN_OAUTH_AUDIENCE, Clock, SystemClock};

/// An RSA key pair the simulated install key server serves and signs `installed` / `uninstalled`
/// with.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallKey {
    /// The `kid` header; served at `<keys_url>/<kid>`.
    pub kid: String,
    /// PKCS#8 PEM private key.
    pub private_pem: String,
    /// SPKI PEM public key, as Atlassian's key server serves it.
    pub public_pem: String,
}

impl fmt::Debug for InstallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl InstallKey {
    /// The simulator's first built-in key (generated for this crate; never used by Atlassian).
    pub fn builtin() -> Self {
        Self {
            kid: "confluence-sim/install-key-a".into(),
            private_pem: include_str!("../keys/install-key-a.private.pem").into(),
            public_pem: include_str!("../keys/install-key-a.public.pem").into(),
        }
    }

    /// A second built-in key, for key rotation ([`crate::Simulator::rotate_install_key`]).
    pub fn builtin_second() -> Self {
        Self {
            kid: "confluence-sim/install-key-b".into(),
            private_pem: include_str!("../keys/install-key-b.private.pem").into(),
            public_pem: include_str!("../keys/install-key-b.public.pem").into(),
        }
    }
}

/// An RSA key pair the simulated Forge platform signs Forge Invocation Tokens (FIT) with; its public
/// half is served in the JWKS at `/.well-known/jwks.json`.
#[derive(Clone, PartialEq, Eq)]
pub struct ForgeKey {
    /// The `kid` of the FIT header and of the JWKS entry.
    pub kid: String,
    /// PKCS#8 PEM private key.
    pub private_pem: String,
    /// SPKI PEM public key.
    pub public_pem: String,
}

impl fmt::Debug for ForgeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForgeKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ForgeKey {
    /// The simulator's own FIT key (generated for this crate; never used by Atlassian).
    pub fn builtin() -> Self {
        Self {
            kid: "confluence-sim/forge-fit-key-a".into(),
            private_pem: include_str!("../keys/forge-fit-key-a.private.pem").into(),
            public_pem: include_str!("../keys/forge-fit-key-a.public.pem").into(),
        }
    }

    /// A second key: a rotated Forge key ([`crate::Simulator::forge_rotate_key`]), or a key that
    /// is not the platform's, to forge FITs with ([`crate::FitSigner::Rsa`]).
    pub fn builtin_second() -> Self {
        Self {
            kid: "confluence-sim/forge-fit-key-b".into(),
            private_pem: include_str!("../keys/forge-fit-key-b.private.pem").into(),
            public_pem: include_str!("../keys/forge-fit-key-b.public.pem").into(),
        }
    }
}

/// How the simulated Forge platform behaves (docs: shared/reference/forge-remote.md).
/// `ForgeConfig::default()` follows Forge's documented numbers, except where a test needs to be
/// fast: set [`ForgeConfig::retry_delay`] to a few milliseconds in tests that see retries.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    /// The Forge app's id (`ari:cloud:ecosystem::app/<uuid>`, the `aud` of every FIT); `None`
    /// makes a random one per simulator. Set it when the app under test is configured first.
    pub app_id: Option<String>,
    /// The key FITs are signed with.
    pub key: ForgeKey,
    /// `app.environment.type` (`DEVELOPMENT`, `STAGING`, `PRODUCTION`).
    pub environment_type: String,
    /// `app.license.isActive`; `None` leaves `license` out (toolsplus documents that Forge sends
    /// no license for free apps and in development and staging environments).
    pub license_active: Option<bool>,
    /// `exp - iat` of every FIT (Forge's documented example: 25 s).
    pub fit_lifetime_seconds: i64,
    /// Timeout of event, lifecycle and scheduled-trigger deliveries (Forge: 5 s).
    pub event_timeout: Duration,
    /// Timeout of UI invocations (`invokeRemote`; Forge: 25 s).
    pub invocation_timeout: Duration,
    /// Wait before each retry of a failed delivery (Forge: about a minute).
    pub retry_delay: Duration,
    /// Retries after the first attempt (Forge: 4).
    pub max_retries: u32,
    /// Deliver page events as `{"payload": <event>, "context": {"cloudId", "moduleKey"}}` instead
    /// of the bare event (which envelope a remote sees is *unverified*; the app accepts both).
    pub wrap_events: bool,
    /// Lifetime of app system tokens (Forge: "at least 2 hours").
    pub system_token_lifetime_seconds: i64,
    /// Lifetime of the user tokens sent with UI invocations (Forge: up to 4 hours).
    pub user_token_lifetime_seconds: i64,
    /// `ttl` of offline user tokens from `offlineUserAuthToken`.
    pub offline_token_ttl_seconds: i64,
}

impl Default for ForgeConfig {
    fn default() -> Self {
        Self {
            app_id: None,
            key: ForgeKey::builtin(),
            environment_type: "DEVELOPMENT".into(),
            license_active: Some(true),
            fit_lifetime_seconds: 25,
            event_timeout: Duration::from_secs(5),
            invocation_timeout: Duration::from_secs(25),
            retry_delay: Duration::from_secs(60),
            max_retries: 4,
            wrap_events: false,
            system_token_lifetime_seconds: 2 * 60 * 60 + 5 * 60,
            user_token_lifetime_seconds: 4 * 60 * 60,
            offline_token_ttl_seconds: 900,
        }
    }
}

/// A clock tests can set and move; share it with the app under test (the workspace's one test
/// clock, from connect-auth).
pub type SimClock = connect_auth::ManualClock;

/// How to start a simulator. `SimConfig::default()` is right for most tests.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The simulator's time (token expiry, JWT `iat`/`exp`, dates).
    pub clock: Arc<dyn Clock>,
    /// `expires_in` of issued access tokens (Atlassian: typically 900 s).
    pub token_lifetime_seconds: i64,
    /// The `aud` the OAuth server requires of assertions. The app computes it from the site's host;
    /// for a site on 127.0.0.1 that is Atlassian's production server, which is the default here.
    pub oauth_audience: String,
    /// Clock skew tolerated on `exp`/`iat`/`nbf` of app JWTs and assertions (Atlassian's Java
    /// reader: 30 s).
    pub leeway_seconds: i64,
    /// Refuse app JWTs without an `aud` naming the clientKey (the app always sends one; set to
    /// false to accept tokens without `aud`, as a lenient Confluence would).
    pub require_app_aud: bool,
    /// Send `enabled` right after a successful `installed` (Connect; Connect on Forge sends none).
    pub send_enabled_after_install: bool,
    /// `aud` of signed installs as a one-element array (`false`: a plain string).
    pub install_aud_as_array: bool,
    /// Send an app webhooks only for pages its app user may view. Confluence checks the app's
    /// permission before sending a webhook (*unverified*, so it is a switch). The same switch
    /// decides for Forge events and the Forge app user (ECO-961: Forge may send no events for pages
    /// the app cannot view).
    pub webhooks_require_app_view: bool,
    /// The key `installed` / `uninstalled` are signed with (served by the key server).
    pub install_key: InstallKey,
    /// The site's clientKey; `None` makes a random one.
    pub client_key: Option<String>,
    /// Timeout of every call the simulator makes to an app.
    pub app_call_timeout: Duration,
    /// The simulated Forge platform (FITs, events, tokens, the API gateway).
    pub forge: ForgeConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            clock: Arc::new(SystemClock),
            token_lifetime_seconds: 900,
            oauth_audience: ATLASSIAN_OAUTH_AUDIENCE.to_owned(),
            leeway_seconds: 30,
            require_app_aud: true,
            send_enabled_after_install: true,
            install_aud_as_array: true,
            webhooks_require_app_view: true,
            install_key: InstallKey::builtin(),
            client_key: None,
            app_call_timeout: Duration::from_secs(10),
            forge: ForgeConfig::default(),
        }
    }
}

impl SimConfig {
    /// The defaults with another clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }
}
