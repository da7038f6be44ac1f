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
    /// permission before sending a webhook (*unverified*, so it is a switch).
    pub webhooks_require_app_view: bool,
    /// The key `installed` / `uninstalled` are signed with (served by the key server).
    pub install_key: InstallKey,
    /// The site's clientKey; `None` makes a random one.
    pub client_key: Option<String>,
    /// Timeout of every call the simulator makes to an app.
    pub app_call_timeout: Duration,
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
