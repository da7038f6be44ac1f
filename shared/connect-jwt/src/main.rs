//! `connect-jwt`: the tool to reach for when Confluence says "qsh mismatch".
//!
//! Every failure is one line on stderr and exit status 1 (2 for a usage error); stdout carries only
//! the requested output.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use connect_auth::{
    AuthError, Claims, Clock, FixedClock, Hs256Verifier, QshMode, RequestParts, SecretString,
    SystemClock, dangerous, extract_token, sign_hs256,
};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "connect-jwt",
    version,
    about = "Atlassian Connect JWT and qsh tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the canonical request (first line) and its qsh (second line).
    Qsh {
        /// HTTP method.
        method: String,
        /// Full URL or path-and-query, exactly as sent (keep it percent-encoded).
        url: String,
        /// Base URL whose path is stripped first (the app's, or the tenant's `.../wiki`).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Verify an HS256 token against a request; print its claims as JSON when valid.
    Verify {
        /// The shared secret (or set CONNECT_JWT_SECRET to keep it out of the process list).
        #[arg(long, env = "CONNECT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Check expiry at this Unix time instead of now.
        #[arg(long)]
        now: Option<i64>,
        /// Base URL whose path is stripped before hashing.
        #[arg(long)]
        base_url: Option<String>,
        /// The token; defaults to the URL's `jwt` parameter.
        #[arg(long)]
        token: Option<String>,
        /// Expect a context token (`qsh = context-qsh`) instead of a request-bound one.
        #[arg(long)]
        context: bool,
        /// HTTP method.
        method: String,
        /// Full URL or path-and-query, exactly as sent.
        url: String,
    },
    /// Print a token's header and claims WITHOUT verifying it.
    Decode {
        /// The token.
        token: String,
    },
    /// Print an HS256 token for a request (for curl-testing a running app).
    Sign {
        /// The shared secret (or set CONNECT_JWT_SECRET).
        #[arg(long, env = "CONNECT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Issuer: the tenant's clientKey (or the app key, for requests to Confluence).
        #[arg(long)]
        iss: String,
        /// Subject: the acting user's accountId.
        #[arg(long)]
        sub: Option<String>,
        /// Audience.
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 180)]
        ttl: i64,
        /// Mint a context token (`qsh = context-qsh`).
        #[arg(long)]
        context: bool,
        /// Base URL whose path is stripped before hashing.
        #[arg(long)]
        base_url: Option<String>,
        /// HTTP method.
        method: String,
        /// Full URL or path-and-query.
        url: String,
    },
}

/// Splits a full URL or a path-and-query into raw path and raw query, keeping the bytes as typed.
fn split_url(url: &str) -> (&str, &str) {
    let without_fragment = url.split('#').next().unwrap_or_default();
    let path_and_query = match without_fragment.split_once("://") {
        Some((_, rest)) => rest.find('/').and_then(|i| rest.get(i..)).unwrap_or(""),
        None => without_fragment,
    };
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

fn base_path(base_url: Option<&str>) -> &str {
    base_url.map_or("", |b| split_url(b).0)
}

fn request<'a>(method: &'a str, url: &'a str, base_url: Option<&'a str>) -> RequestParts<'a> {
    let (path, query) = split_url(url);
    RequestParts::new(method, path, query).with_base_path(base_path(base_url))
}

fn in_words(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (n, unit) = match s {
        0..=119 => (s, "s"),
        120..=7_199 => (s / 60, "min"),
        7_200..=172_799 => (s / 3_600, "h"),
        _ => (s / 86_400, "days"),
    };
    if seconds >= 0 {
        format!("expires in {n} {unit}")
    } else {
        format!("expired {n} {unit} ago")
    }
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Qsh {
            method,
            url,
            base_url,
        } => {
            let r = request(&method, &url, base_url.as_deref());
            Ok(format!("{}\n{}", r.canonical(), r.qsh()))
        }
        Command::Verify {
            secret,
            now,
            base_url,
            token,
            context,
            method,
            url,
        } => {
            let r = request(&method, &url, base_url.as_deref());
            let token = match token.as_deref() {
                Some(t) => t,
                None => extract_token(None, r.raw_query).map_err(|e| e.to_string())?,
            };
            let now = now.unwrap_or_else(|| SystemClock.now_unix());
            let mode = if context {
                QshMode::Context
            } else {
                QshMode::Computed
            };
            let claims: Claims = Hs256Verifier::with_clock(FixedClock(now))
                .verify(token, &SecretString::from(secret), &r, mode)
                .map_err(|e| explain(&e, &r))?;
            serde_json::to_string_pretty(&claims).map_err(|e| e.to_string())
        }
        Command::Decode { token } => {
            let (header, claims) =
                dangerous::decode_unverified(&token).map_err(|e| e.to_string())?;
            let expiry = claims.get("exp").and_then(Value::as_i64).map_or_else(
                || "no exp claim".to_owned(),
                |exp| in_words(exp - SystemClock.now_unix()),
            );
            let header = json!({"alg": header.alg, "kid": header.kid, "typ": header.typ});
            Ok(format!(
                "UNVERIFIED: the signature was not checked\nheader: {header}\nclaims: {}\nexpiry: {expiry}",
                serde_json::to_string_pretty(&claims).map_err(|e| e.to_string())?
            ))
        }
        Command::Sign {
            secret,
            iss,
            sub,
            aud,
            ttl,
            context,
            base_url,
            method,
            url,
        } => {
            let r = request(&method, &url, base_url.as_deref());
            let now = SystemClock.now_unix();
            let qsh = if context {
                connect_auth::CONTEXT_QSH.to_owned()
            } else {
                r.qsh()
            };
            let mut claims = serde_json::Map::new();
            claims.insert("iss".into(), json!(iss));
            claims.insert("iat".into(), json!(now));
            claims.insert("exp".into(), json!(now.saturating_add(ttl)));
            claims.insert("qsh".into(), json!(qsh));
            if let Some(sub) = sub {
                claims.insert("sub".into(), json!(sub));
            }
            if let Some(aud) = aud {
                claims.insert("aud".into(), json!(aud));
            }
            sign_hs256(&claims, &SecretString::from(secret)).map_err(|e| e.to_string())
        }
    }
}

/// A qsh mismatch is the usual support case: say what the request hashed to.
fn explain(err: &AuthError, request: &RequestParts<'_>) -> String {
    match err {
        AuthError::QshMismatch => format!(
            "{err}: this request canonicalises to `{}` (qsh {})",
            request.canonical(),
            request.qsh()
        ),
        _ => err.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("connect-jwt: {reason}");
            ExitCode::FAILURE
        }
    }
}
