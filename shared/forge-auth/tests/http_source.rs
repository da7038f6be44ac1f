//! The HTTP JWKS source against a local server on 127.0.0.1: 200 only, no redirects, a bounded
//! body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::*;
use forge_auth::{
    AppId, FORGE_JWKS_URL, FitError, FitVerifier, HttpJwksSource, JwksSource, ManualClock,
};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}")
}

fn jwks_body() -> String {
    serde_json::to_string(&jwks_json(&[(KID_1, PUBLIC_1)])).unwrap()
}

#[tokio::test]
async fn the_default_url_is_forges_production_jwks() {
    assert_eq!(
        FORGE_JWKS_URL,
        "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"
    );
}

#[tokio::test]
async fn a_jwks_served_with_200_verifies_a_fit() {
    let body = jwks_body();
    let base = serve(Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    ))
    .await;
    let source = HttpJwksSource::new(format!("{base}/.well-known/jwks.json")).unwrap();
    let set = source.fetch().await.unwrap();
    assert_eq!(set.keys.len(), 1);
    let verifier =
        FitVerifier::with_clock(AppId::parse(APP_ID).unwrap(), source, ManualClock::at(NOW));
    assert!(verifier.verify(Some(&bearer(&fit()))).await.is_ok());
}

#[tokio::test]
async fn any_status_but_200_is_unavailable() {
    let base = serve(
        Router::new()
            .route(
                "/500",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, jwks_body()) }),
            )
            .route(
                "/404",
                get(|| async { (StatusCode::NOT_FOUND, jwks_body()) }),
            )
            .route("/204", get(|| async { StatusCode::NO_CONTENT })),
    )
    .await;
    for path in ["/500", "/404", "/204"] {
        let source = HttpJwksSource::new(format!("{base}{path}")).unwrap();
        assert!(source.fetch().await.is_err(), "{path}");
        let verifier =
            FitVerifier::with_clock(AppId::parse(APP_ID).unwrap(), source, ManualClock::at(NOW));
        let error = verifier.verify(Some(&bearer(&fit()))).await.unwrap_err();
        assert_eq!(error, FitError::JwksUnavailable, "{path}");
        assert!(error.is_unavailable());
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&followed);
    let body = jwks_body();
    let base = serve(
        Router::new()
            .route(
                "/moved",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "/.well-known/jwks.json")],
                    )
                        .into_response()
                }),
            )
            .route(
                "/.well-known/jwks.json",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move { body }
                }),
            ),
    )
    .await;
    let source = HttpJwksSource::new(format!("{base}/moved")).unwrap();
    assert!(source.fetch().await.is_err());
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    // Announced with a Content-Length.
    let big = format!(
        "{{\"keys\":[],\"pad\":\"{}\"}}",
        "x".repeat(HttpJwksSource::MAX_BODY_BYTES)
    );
    // Streamed without one.
    let streamed = big.clone();
    let base = serve(
        Router::new()
            .route(
                "/big",
                get(move || {
                    let big = big.clone();
                    async move { big }
                }),
            )
            .route(
                "/streamed",
                get(move || {
                    let streamed = streamed.clone();
                    async move {
                        let chunks: Vec<Result<String, std::io::Error>> = streamed
                            .into_bytes()
                            .chunks(16 * 1024)
                            .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
                            .collect();
                        axum::body::Body::from_stream(futures::stream::iter(chunks))
                    }
                }),
            )
            .route(
                "/just-fits",
                get(|| async {
                    let body = format!(
                        "{{\"keys\":[],\"pad\":\"{}\"}}",
                        "x".repeat(HttpJwksSource::MAX_BODY_BYTES - 64)
                    );
                    body
                }),
            ),
    )
    .await;
    for path in ["/big", "/streamed"] {
        let source = HttpJwksSource::new(format!("{base}{path}")).unwrap();
        let error = source.fetch().await.unwrap_err();
        assert!(error.0.contains("larger"), "{path}: {error}");
    }
    let source = HttpJwksSource::new(format!("{base}/just-fits")).unwrap();
    assert!(source.fetch().await.unwrap().keys.is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_a_jwks_is_unavailable() {
    let base = serve(Router::new().route("/", get(|| async { "<html>hello</html>" }))).await;
    let source = HttpJwksSource::new(format!("{base}/")).unwrap();
    assert!(source.fetch().await.is_err());
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable() {
    // A port nothing listens on: bind, note it, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let source = HttpJwksSource::new(format!("http://{address}/jwks.json")).unwrap();
    let verifier =
        FitVerifier::with_clock(AppId::parse(APP_ID).unwrap(), source, ManualClock::at(NOW));
    assert_eq!(
        verifier.verify(Some(&bearer(&fit()))).await,
        Err(FitError::JwksUnavailable)
    );
}
