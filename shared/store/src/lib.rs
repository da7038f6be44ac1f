//! Store adapters for the ports of `understudy-domain`. Features `dynamo` and `embedded` (both on
//! by default) choose which adapters are built.
//!
//! - [`DynamoStore`]: DynamoDB, one table, on AWS (or any DynamoDB-compatible server).
//! - [`EmbeddedStore`]: one redb file under a data directory, for runs without AWS.
//! - [`SecretCipher`]: app-level AES-256-GCM encryption of shared secrets, access tokens and Forge
//!   system tokens, with data keys from KMS ([`KmsCipher`], envelope encryption) or from a local
//!   key file ([`LocalKeyCipher`]). A read of the raw table or file shows no secret.
//!
//! # DynamoDB table (template.yaml copies this)
//!
//! | | |
//! |---|---|
//! | billing | `PAY_PER_REQUEST` |
//! | partition key | `pk` (S) = the tenant's clientKey; for a Forge installation's own items, its ARI (`ari:cloud:ecosystem::installation/<id>`, which is also the tenant key of an installation no Connect tenant is linked to); for the report schedule, `#REPORT#<slot>` (no clientKey starts with `#`) |
//! | sort key | `sk` (S) = record kind, below |
//! | TTL attribute | `expires_at` (N, unix seconds); enabled |
//! | GSI `gsi1` | partition `gsi1pk` (S) = clientKey, sort `gsi1sk` (S) = `PAGE#<pageId>#<ms>#<id>` (audit items) or `PARKEDAT#<ms>#<pageId>` (parked jobs); projection `ALL`; only those two kinds carry it (sparse) |
//!
//! Sort keys (`<ms>` is unix milliseconds zero-padded to 20 digits, `<id>` a random UUID):
//!
//! | `sk` | record | TTL |
//! |---|---|---|
//! | `TENANT` | tenant; `shared_secret` (B) is ciphertext | 30 days after uninstall, else none |
//! | `SETTINGS` | tenant settings, `document` (S, JSON) | follows the tenant after uninstall |
//! | `TOKEN#<sha256 hex of accountId\nscopes>` | cached access token, `access_token` (B) ciphertext | the token's expiry |
//! | `MARK#<idempotency key>` | de-duplication mark | as requested |
//! | `AUDIT#<ms>#<id>` | audit record, `record` (S, JSON) | as requested |
//! | `PARKED#<pageId>` | the page's parked job (one per page: a park replaces it), `gsi1sk` = `PARKEDAT#<ms>#<pageId>`; `at_ms` (N), `outcome` (S), `reason` (S), `dead_lettered` (BOOL), `job` (S, the queue's JSON: no secret, in plain text like an audit record's accountId) | [`understudy_domain::PARKED_JOB_RETENTION_SECONDS`] after `at_ms` |
//! | `ACCOUNT#<accountId>` | an account the tenant's data holds (personal data reporting), `retrieved_at` (N, the oldest retrieval kept), `next_report_at` (N, once reported: when it is due again), `closed_at` (N, once reported closed: flagged while its data is erased, then deleted); in `sk` order, which is accountId order | none |
//! | `CLOSED#<hex of SHA-256("closed\n" + accountId)>` | an account reported closed ([`understudy_domain::ClosedAccountKey`]), `closed_at` (N); nothing names the accountId; kept for good | none |
//! | `RATE#<sha256 hex of accountId>#<window seconds>#<window start>` | rate-limit counter, `count` (N) | one window after its window ends |
//! | `FORGE#INSTALLATION` (`pk` = installation ARI) | Forge installation: `app_id`, `cloud_id`, `api_base_url` (S), `system_token` (B) ciphertext, `token_issued_at`, `token_expires_at`, `created_at`, `updated_at` (N) | 30 days after the last invocation recorded (renewed by each) |
//! | `FORGE#LINK` (`pk` = installation ARI) | the Connect tenant the installation is linked to, `client_key` (S), `linked_at` (N) | none |
//! | `<tenant key>` (`pk` = `#REPORT#<slot>`, two digits, `00`..`23`) | the tenant (clientKey or installation ARI) in the personal data report schedule, slot [`understudy_domain::report_slot`]; keys only; put by every install and Forge record, deleted last by a purge | none |
//!
//! A Forge installation is read with one strongly consistent Query (`pk = <ARI> AND
//! begins_with(sk, "FORGE#")`) that returns the installation and its link, and nothing of what an
//! unlinked installation keeps under the same `pk` as its tenant key (settings, audit, ...). Which
//! system token a record keeps is decided in the database, never read and then written: a live
//! installation's token is replaced only by an UpdateItem conditioned on
//! `token_issued_at < :issued_at`, and a PutItem writes a fresh installation only on the condition
//! that none is live (absent, expired, or corrupt in what that update relies on).
//!
//! An audit listing's cursor ([`understudy_domain::AuditCursor`], `<ms>-<id>`) is the end of the
//! record's sort key; the next page is a Query with `sk BETWEEN <prefix> AND <prefix><ms>#<id>`,
//! newest first, the cursor's own item skipped.
//!
//! Parked jobs are listed newest first by (`at_ms`, page id) with one Query on the tenant's
//! partition of `gsi1`: `gsi1pk = <clientKey> AND begins_with(gsi1sk, "PARKEDAT#")`, descending;
//! the next page (cursor `(at_ms, pageId)`) is `gsi1sk BETWEEN "PARKEDAT#" AND
//! "PARKEDAT#<ms>#<pageId>"`, the cursor's own entry skipped. (`<pageId>` ends the key, so two jobs
//! of one millisecond order by page id as text, as [`understudy_domain::PageId`] does.) A park is
//! one unconditional PutItem of `PARKED#<pageId>` (the index follows the item: a replaced job is
//! never listed twice); the listing is eventually consistent, reading one job
//! ([`understudy_domain::ParkedJobs::parked`]) is a strongly consistent GetItem.
//!
//! Accounts are listed with one strongly consistent Query, `pk = <clientKey> AND begins_with(sk,
//! "ACCOUNT#")`, the next page from `ExclusiveStartKey` = the key of the `after` account. Noting
//! an account is one TransactWriteItems: a ConditionCheck that its `CLOSED#` item is absent and an
//! UpdateItem of its `ACCOUNT#` item conditioned on being new or holding a later `retrieved_at`
//! (so the older time stays); closing one is one TransactWriteItems of two UpdateItems that set
//! the `CLOSED#` item's `closed_at` and flag the `ACCOUNT#` item (`closed_at`, creating it if
//! absent), so a note racing a close never lists the account as open again; forgetting it once its
//! data is erased is a DeleteItem of the listing. A report mark is an UpdateItem conditioned on
//! `attribute_exists(pk)`. Erasing an account from the audit trail is a Query of the tenant's
//! `AUDIT#` items and an UpdateItem (conditioned on `attribute_exists(pk)`) of the `record` of each
//! that names it.
//!
//! The report schedule is listed per slot with one strongly consistent Query on `pk =
//! #REPORT#<slot>`, the next page from `ExclusiveStartKey` = the `after` tenant's entry. Purging a
//! tenant whose retention is over is a Query of its partition (keys only), BatchWriteItem deletes
//! (chunks of 25, a bounded budget per call), then DeleteItem of the `TENANT` item and of the
//! schedule entry, last.
//!
//! The embedded file ([`EmbeddedStore`]) keeps the same sort keys under `<clientKey> NUL <sk>`; in
//! place of `gsi1` it writes its index keys as rows of their own, in the same transaction: a copy of
//! each audit record under `PAGE#<pageId>#<ms>#<id>`, and an empty row `PARKEDAT#<ms>#<pageId>` per
//! parked job.
//!
//! Request paths use GetItem (strongly consistent), PutItem/UpdateItem (conditional where races
//! matter; rate limits are one unconditional `ADD`), DeleteItem (a mark whose hand-off failed, an
//! unparked job, a dropped token, a forgotten account, a purge's last two items), Query (audit,
//! parked-job, account and schedule listings, token clean-up, audit erasure, purge, Forge
//! installation), TransactWriteItems (noting and closing an account) and BatchWriteItem (token
//! clean-up, purge); never Scan. IAM for the functions: `dynamodb:GetItem, PutItem, UpdateItem,
//! DeleteItem, ConditionCheckItem, Query, BatchWriteItem` on the table and its `/index/*` (a
//! TransactWriteItems is authorised per part: `ConditionCheckItem`, `UpdateItem`);
//! `kms:GenerateDataKey, kms:Decrypt` on the key.
//!
//! The SDK retries throttling and transient errors (standard retry mode, 4 attempts); what still
//! fails is [`understudy_domain::StoreError::Unavailable`], which the functions answer with 503.

#[cfg(feature = "dynamo")]
mod aws;
mod codec;
mod crypto;
#[cfg(feature = "dynamo")]
mod dynamo;
#[cfg(feature = "embedded")]
mod embedded;
mod keys;
#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(feature = "dynamo")]
pub use crypto::{KmsCipher, KmsConfig};
pub use crypto::{LocalKeyCipher, SecretCipher, secret_context};
#[cfg(feature = "dynamo")]
pub use dynamo::{DynamoConfig, DynamoStore};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;

#[cfg(feature = "dynamo")]
mod env;
#[cfg(feature = "dynamo")]
pub use aws_config::SdkConfig;
#[cfg(feature = "dynamo")]
pub use env::load_aws_config;
