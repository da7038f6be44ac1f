//! The one way a token cache is refilled: per key, one load at a time.

use std::hash::Hash;

use moka::future::Cache;
use moka::ops::compute::Op;

use crate::error::TokenError;

/// The value cached for `key` when `fresh` says it may be used, else the one `load` gives (then
/// cached). Moka runs the computations of one key one at a time, in order, so callers that waited
/// find the value the first one loaded instead of loading again: one exchange per key, however
/// many callers. A value that is not fresh and cannot be replaced is dropped all the same.
pub(crate) async fn fresh_or_load<K, V, Fresh, Load, Fut>(
    cache: &Cache<K, V>,
    key: K,
    fresh: Fresh,
    load: Load,
) -> Result<V, TokenError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    Fresh: Fn(&V) -> bool,
    Load: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, TokenError>>,
{
    if let Some(held) = cache.get(&key).await
        && fresh(&held)
    {
        return Ok(held);
    }
    let mut failure = None;
    let computed = cache
        .entry(key)
        .and_compute_with(|held| {
            let failure = &mut failure;
            let fresh = &fresh;
            async move {
                if held.as_ref().is_some_and(|held| fresh(held.value())) {
                    return Op::Nop;
                }
                match load().await {
                    Ok(value) => Op::Put(value),
                    Err(error) => {
                        *failure = Some(error);
                        Op::Remove
                    }
                }
            }
        })
        .await;
    if let Some(error) = failure {
        return Err(error);
    }
    computed
        .into_entry()
        .map(moka::Entry::into_value)
        .ok_or(TokenError::InvalidResponse {
            reason: "the token vanished from memory as it was stored",
        })
}
