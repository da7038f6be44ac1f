//! Hot operations against the embedded store, and the cost of opening a sealed secret.
//!
//! `cargo bench -p understudy-store --bench store`; criterion reports items/second ("thrpt").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use understudy_domain::{ClientKey, IdempotencyKey, IdempotencyMarks, Tenant, TenantStore};
use understudy_store::{EmbeddedStore, LocalKeyCipher, SecretCipher, secret_context};

const NOW: i64 = 1_800_000_000;

fn embedded(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
    let tenant = Tenant::from_install_payload(
        serde_json::json!({
            "key": "understudy", "clientKey": "bench-tenant", "sharedSecret": "x".repeat(64),
            "baseUrl": "https://bench.atlassian.net/wiki", "productType": "confluence"
        }),
        NOW,
    )
    .unwrap();
    rt.block_on(store.save_install(&tenant, NOW)).unwrap();
    let client_key = ClientKey::parse("bench-tenant").unwrap();

    let mut group = c.benchmark_group("embedded");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_tenant (incl. secret decrypt)", |b| {
        b.iter(|| {
            rt.block_on(store.get_tenant(&client_key, NOW))
                .unwrap()
                .unwrap()
        });
    });
    let counter = AtomicU64::new(0);
    group.bench_function("mark_once (new mark, durable commit)", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let key = IdempotencyKey::parse(format!("event-{n}")).unwrap();
            assert!(
                rt.block_on(store.mark_once(&client_key, &key, 3600, NOW))
                    .unwrap()
                    .is_first()
            );
        });
    });
    group.finish();
}

fn secrets(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cipher: Arc<dyn SecretCipher> =
        Arc::new(LocalKeyCipher::open_or_create(dir.path().join("keyring.json")).unwrap());
    let context = secret_context(&ClientKey::parse("bench-tenant").unwrap(), "TENANT");
    let secret = SecretString::from("x".repeat(64));
    let sealed = futures::executor::block_on(cipher.seal(&secret, &context)).unwrap();

    let mut group = c.benchmark_group("secret");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open (AES-256-GCM, 64-byte secret)", |b| {
        b.iter(|| futures::executor::block_on(cipher.open(&sealed, &context)).unwrap());
    });
    group.bench_function("seal (AES-256-GCM, 64-byte secret)", |b| {
        b.iter(|| futures::executor::block_on(cipher.seal(&secret, &context)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, embedded, secrets);
criterion_main!(benches);
