//! The install-key cache as a shield for the key servers: misses remembered, fetches budgeted,
//! concurrent lookups of one kid sharing one fetch. Time is an injected clock; nothing sleeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use connect_auth::{
    AuthError, CachingKeyProvider, InMemoryKeys, KeyError, KeyProvider, Kid, ManualClock,
};
use jsonwebtoken::DecodingKey;
use tokio::sync::Semaphore;

const NOW: i64 = 1_750_000_000;
const PUBLIC_PEM: &[u8] = include_bytes!("fixtures/test-install-key.public.pem");

/// Knows `real` and `real-2`; `down` is unavailable; every other kid is unknown. Counts every
/// lookup; when gated, each lookup first waits for a permit.
struct Counting {
    keys: InMemoryKeys,
    calls: AtomicUsize,
    gate: Option<Semaphore>,
}

impl Counting {
    fn new() -> Arc<Self> {
        Arc::new(Self::build(None))
    }
    fn gated() -> Arc<Self> {
        Arc::new(Self::build(Some(Semaphore::new(0))))
    }
    fn build(gate: Option<Semaphore>) -> Self {
        let keys = InMemoryKeys::new();
        keys.insert_pem("real", PUBLIC_PEM).unwrap();
        keys.insert_pem("real-2", PUBLIC_PEM).unwrap();
        Self {
            keys,
            calls: AtomicUsize::new(0),
            gate,
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn open(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(1000);
        }
    }
}

#[async_trait]
impl KeyProvider for Counting {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if kid.as_str() == "down" {
            return Err(KeyError::Unavailable("key server down".into()));
        }
        self.keys.public_key(kid).await
    }
}

type Cache = CachingKeyProvider<Arc<Counting>, Arc<ManualClock>>;

fn cache(inner: &Arc<Counting>, clock: &Arc<ManualClock>) -> Cache {
    CachingKeyProvider::with_clock(Arc::clone(inner), 8, Arc::clone(clock))
}

fn kid(name: &str) -> Kid {
    Kid::parse(name).unwrap()
}

#[test]
fn the_defaults_are_the_documented_ones() {
    assert_eq!(CachingKeyProvider::<()>::DEFAULT_CAPACITY, 64);
    assert_eq!(CachingKeyProvider::<()>::DEFAULT_MISS_TTL_SECONDS, 300);
    assert_eq!(CachingKeyProvider::<()>::DEFAULT_MISS_CAPACITY, 1024);
    assert_eq!(CachingKeyProvider::<()>::DEFAULT_MAX_FETCHES, 10);
    assert_eq!(CachingKeyProvider::<()>::DEFAULT_FETCH_WINDOW_SECONDS, 10);
}

#[tokio::test]
async fn many_distinct_forged_kids_cost_at_most_the_fetch_budget() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock);
    let mut not_found = 0;
    let mut unavailable = 0;
    for i in 0..200 {
        match keys.public_key(&kid(&format!("forged-{i}"))).await {
            Err(KeyError::NotFound) => not_found += 1,
            Err(KeyError::Unavailable(_)) => unavailable += 1,
            Ok(_) => panic!("forged-{i} found"),
        }
    }
    assert_eq!(inner.calls(), 10, "10 fetches per 10 s");
    assert_eq!((not_found, unavailable), (10, 190));
    // Over budget is "try again later" (503), never "forged" (401).
    let over = keys.public_key(&kid("forged-x")).await.unwrap_err();
    assert!(AuthError::from(over).is_unavailable());

    // The window is sliding: 9 s on, still nothing; at 10 s, 10 more.
    clock.advance(9);
    assert!(matches!(
        keys.public_key(&kid("real")).await,
        Err(KeyError::Unavailable(_))
    ));
    assert_eq!(inner.calls(), 10);
    clock.advance(1);
    keys.public_key(&kid("real")).await.unwrap();
    for i in 200..300 {
        let _ = keys.public_key(&kid(&format!("forged-{i}"))).await;
    }
    assert_eq!(inner.calls(), 20);
}

#[tokio::test]
async fn a_cached_key_is_answered_whatever_the_flood() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock);
    keys.public_key(&kid("real")).await.unwrap();
    for i in 0..50 {
        let _ = keys.public_key(&kid(&format!("forged-{i}"))).await;
    }
    let calls = inner.calls();
    for _ in 0..5 {
        keys.public_key(&kid("real")).await.unwrap();
    }
    assert_eq!(inner.calls(), calls, "cached keys cost no fetch");
    assert_eq!(keys.cached(), 1);
}

#[tokio::test]
async fn a_missing_kid_is_fetched_once_until_the_miss_expires() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock);
    let missing = kid("no-such-kid");
    for _ in 0..3 {
        assert_eq!(
            keys.public_key(&missing).await.err(),
            Some(KeyError::NotFound)
        );
    }
    assert_eq!(inner.calls(), 1);
    clock.advance(299);
    assert_eq!(
        keys.public_key(&missing).await.err(),
        Some(KeyError::NotFound)
    );
    assert_eq!(inner.calls(), 1, "remembered for 5 minutes");
    clock.advance(1);
    assert_eq!(
        keys.public_key(&missing).await.err(),
        Some(KeyError::NotFound)
    );
    assert_eq!(inner.calls(), 2, "asked again once the miss expired");
    assert_eq!(
        keys.public_key(&missing).await.err(),
        Some(KeyError::NotFound)
    );
    assert_eq!(inner.calls(), 2, "and remembered again");
}

#[tokio::test]
async fn a_real_key_is_still_found_and_cached() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock);
    keys.public_key(&kid("real")).await.unwrap();
    clock.advance(3600);
    keys.public_key(&kid("real")).await.unwrap();
    assert_eq!(inner.calls(), 1, "found keys do not expire");
    keys.public_key(&kid("real-2")).await.unwrap();
    assert_eq!((inner.calls(), keys.cached()), (2, 2));
}

#[tokio::test]
async fn an_unavailable_key_server_is_asked_again_within_the_budget() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock);
    for _ in 0..2 {
        assert!(matches!(
            keys.public_key(&kid("down")).await,
            Err(KeyError::Unavailable(_))
        ));
    }
    assert_eq!(inner.calls(), 2, "outages are not remembered");
    assert_eq!(keys.remembered_misses(), 0);
}

#[tokio::test]
async fn remembered_misses_stay_within_their_bound() {
    let (inner, clock) = (Counting::new(), ManualClock::at(NOW));
    let keys = cache(&inner, &clock)
        .miss_memory(300, 3)
        .fetch_budget(1000, 10);
    for i in 0..20 {
        let _ = keys.public_key(&kid(&format!("forged-{i}"))).await;
    }
    assert_eq!(keys.remembered_misses(), 3);
    // The newest are the ones remembered.
    let _ = keys.public_key(&kid("forged-19")).await;
    assert_eq!(inner.calls(), 20);
    let _ = keys.public_key(&kid("forged-0")).await;
    assert_eq!(inner.calls(), 21);
    // Expired misses are swept as new ones come in.
    clock.advance(300);
    let _ = keys.public_key(&kid("forged-new")).await;
    assert_eq!(keys.remembered_misses(), 1);
}

/// Lets every spawned task run until it waits (the tests run on one thread).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn concurrent_lookups_of_one_kid_share_one_fetch() {
    let (inner, clock) = (Counting::gated(), ManualClock::at(NOW));
    let keys = Arc::new(cache(&inner, &clock));
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for name in std::iter::repeat_n("real", 16).chain(std::iter::repeat_n("missing", 16)) {
        let (keys, started) = (Arc::clone(&keys), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            keys.public_key(&kid(name)).await.map(|_| ())
        }));
    }
    settle().await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        32,
        "every lookup is waiting"
    );
    assert_eq!(inner.calls(), 2, "one fetch per kid");
    inner.open();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results[..16].iter().all(Result::is_ok));
    assert!(results[16..].iter().all(|r| *r == Err(KeyError::NotFound)));
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn a_cancelled_fetch_lets_the_waiting_lookups_fetch_again() {
    let (inner, clock) = (Counting::gated(), ManualClock::at(NOW));
    let keys = Arc::new(cache(&inner, &clock));
    let first = {
        let keys = Arc::clone(&keys);
        tokio::spawn(async move { keys.public_key(&kid("real")).await.map(|_| ()) })
    };
    settle().await;
    let second = {
        let keys = Arc::clone(&keys);
        tokio::spawn(async move { keys.public_key(&kid("real")).await.map(|_| ()) })
    };
    settle().await;
    assert_eq!(inner.calls(), 1);
    first.abort();
    settle().await;
    assert_eq!(inner.calls(), 2, "the waiting lookup took over");
    inner.open();
    assert_eq!(second.await.unwrap(), Ok(()));
    assert_eq!(keys.cached(), 1);
}
