//! Sort keys of the single-table layout, shared by both adapters so the embedded file and the
//! DynamoDB table look the same to whoever reads them. Every prefix ends in `#`, so a prefix scan
//! cannot match another kind.
//!
//! Forge installations are kept under the installation's ARI
//! ([`understudy_domain::InstallationId::own_tenant_key`]) in place of a clientKey: the
//! installation itself at [`FORGE_INSTALLATION_SK`], the Connect tenant it is linked to at
//! [`FORGE_LINK_SK`]. Both start with [`FORGE_PREFIX`], so one prefix read returns the two and
//! nothing else an unlinked installation keeps under the same key (its settings and audit).
//!
//! Every key above is under a tenant's partition (`pk` = the tenant key). The personal data report
//! schedule is the one exception: partitions of the app's own, `pk` = `#REPORT#<slot>`
//! ([`schedule_pk`], the slot two digits, `00` to `23`), `sk` = the tenant key, one entry per
//! tenant (Connect clientKey or Forge installation ARI) in the slot
//! [`understudy_domain::report_slot`] gives it. No clientKey starts with `#`
//! ([`understudy_domain::ClientKey::RESERVED_PREFIX`]), so no tenant's partition is one of them.

#[cfg(feature = "dynamo")]
use understudy_domain::RateWindow;
use understudy_domain::{
    AccountId, AuditCursor, AuditRecord, ClientKey, ClosedAccountKey, IdempotencyKey,
    PARKED_JOB_RETENTION_SECONDS, PageId, StoreError, TokenCacheKey, report_slot,
};

pub(crate) const TENANT_SK: &str = "TENANT";
pub(crate) const SETTINGS_SK: &str = "SETTINGS";
pub(crate) const TOKEN_PREFIX: &str = "TOKEN#";
pub(crate) const AUDIT_PREFIX: &str = "AUDIT#";
/// The embedded file's page-scoped copies of audit records, `PAGE#<pageId>#<ms>#<id>` (DynamoDB's
/// `gsi1sk` of the audit item).
pub(crate) const PAGE_PREFIX: &str = "PAGE#";
/// What a Forge installation keeps under its ARI: [`FORGE_INSTALLATION_SK`] and [`FORGE_LINK_SK`].
#[cfg(feature = "dynamo")]
pub(crate) const FORGE_PREFIX: &str = "FORGE#";
/// A Forge installation (its system token sealed under this sort key).
pub(crate) const FORGE_INSTALLATION_SK: &str = "FORGE#INSTALLATION";
/// The Connect tenant a Forge installation is linked to.
pub(crate) const FORGE_LINK_SK: &str = "FORGE#LINK";
/// A page's parked job, one per page: `PARKED#<pageId>` (a park replaces it).
pub(crate) const PARKED_PREFIX: &str = "PARKED#";
/// A parked job's place in time order, `PARKEDAT#<ms>#<pageId>`: DynamoDB's `gsi1sk` of the
/// parked item, the embedded file's index key. (`PARKEDAT#` is no `PARKED#` key: the 7th byte
/// differs.)
pub(crate) const PARKED_AT_PREFIX: &str = "PARKEDAT#";
/// An account the tenant's data holds, `ACCOUNT#<accountId>`: string order is accountId order (an
/// accountId has no `#`).
pub(crate) const ACCOUNT_PREFIX: &str = "ACCOUNT#";
/// What is left of an account reported closed, `CLOSED#<hex key>`: a hash, not the accountId.
pub(crate) const CLOSED_PREFIX: &str = "CLOSED#";
/// Rate-limit counters live in the table on DynamoDB only (the local app counts in memory).
#[cfg(feature = "dynamo")]
pub(crate) const RATE_PREFIX: &str = "RATE#";
/// The partitions of the report schedule, `#REPORT#<slot>`: not a tenant's (see the module docs).
pub(crate) const SCHEDULE_PREFIX: &str = "#REPORT#";

pub(crate) fn token_sk(key: &TokenCacheKey) -> String {
    format!("{TOKEN_PREFIX}{}", key.as_str())
}

pub(crate) fn mark_sk(key: &IdempotencyKey) -> String {
    format!("MARK#{}", key.as_str())
}

/// Zero-padded so that string order is time order (DynamoDB sorts sort keys as bytes).
fn ms(at_ms: i64) -> String {
    format!("{:020}", at_ms.max(0))
}

pub(crate) fn audit_sk(at_ms: i64, id: &str) -> String {
    format!("{AUDIT_PREFIX}{}#{id}", ms(at_ms))
}

/// `PAGE#<pageId>#`: page ids are digits only, so page 1 never matches page 12.
pub(crate) fn page_prefix(page_id: &PageId) -> String {
    format!("{PAGE_PREFIX}{}#", page_id.as_str())
}

pub(crate) fn page_sk(page_id: &PageId, at_ms: i64, id: &str) -> String {
    format!("{}{}#{id}", page_prefix(page_id), ms(at_ms))
}

/// `<ms>#<id>`: the end of an audit sort key (tenant or page) at the cursor's position.
pub(crate) fn cursor_sk_suffix(cursor: &AuditCursor) -> String {
    format!("{}#{}", cursor.ms_digits(), cursor.id())
}

/// The cursor of the audit record stored under this sort key (`AUDIT#<ms>#<id>` or
/// `PAGE#<pageId>#<ms>#<id>`).
pub(crate) fn cursor_of_sk(sk: &str) -> Result<AuditCursor, StoreError> {
    let mut parts = sk.rsplitn(3, '#');
    let (Some(id), Some(ms)) = (parts.next(), parts.next()) else {
        return Err(StoreError::corrupt("audit (sort key)"));
    };
    if ms.len() != 20 {
        return Err(StoreError::corrupt("audit (sort key)"));
    }
    AuditCursor::parse(&format!("{ms}-{id}")).map_err(|_| StoreError::corrupt("audit (sort key)"))
}

/// `PARKED#<pageId>`: the page's parked job.
pub(crate) fn parked_sk(page_id: &PageId) -> String {
    format!("{PARKED_PREFIX}{}", page_id.as_str())
}

/// `PARKEDAT#<ms>#<pageId>`: string order is the listing order, (`at_ms`, page id), as
/// [`PageId`] orders by its text and the page id ends the key.
pub(crate) fn parked_at_sk(at_ms: i64, page_id: &PageId) -> String {
    format!("{PARKED_AT_PREFIX}{}#{}", ms(at_ms), page_id.as_str())
}

/// The page whose parked job is stored under this sort key (`PARKED#<pageId>`).
#[cfg(feature = "dynamo")]
pub(crate) fn page_of_parked_sk(sk: &str) -> Result<PageId, StoreError> {
    sk.strip_prefix(PARKED_PREFIX)
        .and_then(|page| PageId::parse(page).ok())
        .ok_or_else(|| StoreError::corrupt("parked job (sort key)"))
}

/// The page a time-order key (`PARKEDAT#<ms>#<pageId>`) stands for.
#[cfg(feature = "embedded")]
pub(crate) fn page_of_parked_at_sk(sk: &str) -> Result<PageId, StoreError> {
    sk.strip_prefix(PARKED_AT_PREFIX)
        .and_then(|rest| rest.split_once('#'))
        .filter(|(ms, _)| ms.len() == 20 && ms.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(_, page)| PageId::parse(page).ok())
        .ok_or_else(|| StoreError::corrupt("parked job (time key)"))
}

/// A parked job expires [`PARKED_JOB_RETENTION_SECONDS`] after it was parked (the memory store's
/// rule: expired when `at_ms / 1000 + retention <= now`).
pub(crate) fn parked_expiry(at_ms: i64) -> i64 {
    (at_ms / 1000).saturating_add(PARKED_JOB_RETENTION_SECONDS)
}

/// `ACCOUNT#<accountId>`: the account's listing.
pub(crate) fn account_sk(account: &AccountId) -> String {
    format!("{ACCOUNT_PREFIX}{}", account.as_str())
}

/// The account listed under this sort key (`ACCOUNT#<accountId>`).
pub(crate) fn account_of_sk(sk: &str) -> Result<AccountId, StoreError> {
    sk.strip_prefix(ACCOUNT_PREFIX)
        .and_then(|id| AccountId::parse(id).ok())
        .ok_or_else(|| StoreError::corrupt("account (sort key)"))
}

/// `CLOSED#<hex key>`: an account reported closed, by its [`ClosedAccountKey`] only.
pub(crate) fn closed_sk(key: &ClosedAccountKey) -> String {
    format!("{CLOSED_PREFIX}{}", key.as_str())
}

/// `RATE#<sha256 hex of the subject>#<window seconds>#<window start>`: no accountId in clear.
#[cfg(feature = "dynamo")]
pub(crate) fn rate_sk(window: &RateWindow) -> String {
    format!(
        "{RATE_PREFIX}{}#{}#{}",
        window.subject_hash(),
        window.seconds(),
        window.start()
    )
}

/// `#REPORT#<slot as two digits>`: the partition of one report slot.
pub(crate) fn schedule_pk(slot: u32) -> String {
    format!("{SCHEDULE_PREFIX}{slot:02}")
}

/// The partition whose schedule entry (`sk` = the tenant key) enters this tenant in its slot.
pub(crate) fn schedule_pk_of(tenant: &ClientKey) -> String {
    schedule_pk(report_slot(tenant))
}

/// The tenant a schedule entry's sort key names.
pub(crate) fn tenant_of_schedule_sk(sk: &str) -> Result<ClientKey, StoreError> {
    ClientKey::parse(sk).map_err(|_| StoreError::corrupt("report schedule (sort key)"))
}

/// An audit record expires `retention_seconds` after it happened.
pub(crate) fn audit_expiry(record: &AuditRecord, retention_seconds: i64) -> i64 {
    record
        .at_ms
        .div_euclid(1000)
        .saturating_add(retention_seconds)
}

/// Whether a record with this TTL is still visible at `now` (expired means `expires_at <= now`).
pub(crate) fn live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|t| t > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn a_cursor_is_read_back_from_either_audit_key_and_points_at_it() {
        let page = PageId::parse("12").unwrap();
        for sk in [audit_sk(1_700, ID), page_sk(&page, 1_700, ID)] {
            let cursor = cursor_of_sk(&sk).unwrap();
            assert_eq!(cursor, AuditCursor::new(1_700, ID).unwrap());
            assert!(sk.ends_with(&cursor_sk_suffix(&cursor)));
        }
        for bad in [
            "AUDIT#",
            "AUDIT#17#x",
            "PAGE#1#00000000000000001700#XYZ",
            "TENANT",
        ] {
            assert!(cursor_of_sk(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parked_keys_order_as_the_listing_and_name_their_page() {
        let page = |p: &str| PageId::parse(p).unwrap();
        // (at_ms, page id) ascending, page ids compared as text like `PageId`'s `Ord`.
        let positions = [(5, "1"), (5, "12"), (5, "9"), (40, "100"), (1_000, "2")];
        for pair in positions.windows(2) {
            let (a, b) = ((pair[0].0, page(pair[0].1)), (pair[1].0, page(pair[1].1)));
            assert!(a < b);
            assert!(
                parked_at_sk(a.0, &a.1) < parked_at_sk(b.0, &b.1),
                "{a:?} {b:?}"
            );
        }
        assert!(!parked_at_sk(5, &page("12")).starts_with(PARKED_PREFIX));
        #[cfg(feature = "dynamo")]
        {
            let sk = parked_sk(&page("12"));
            assert_eq!(page_of_parked_sk(&sk).unwrap(), page("12"));
            for bad in [
                "PARKED#",
                "PARKED#x1",
                "PARKEDAT#00000000000000000005#12",
                "TENANT",
            ] {
                assert!(page_of_parked_sk(bad).is_err(), "{bad}");
            }
        }
        #[cfg(feature = "embedded")]
        {
            let sk = parked_at_sk(5, &page("12"));
            assert_eq!(page_of_parked_at_sk(&sk).unwrap(), page("12"));
            for bad in [
                "PARKEDAT#5#12",
                "PARKEDAT#00000000000000000005#",
                "PARKED#12",
            ] {
                assert!(page_of_parked_at_sk(bad).is_err(), "{bad}");
            }
        }
        assert_eq!(parked_expiry(1_500), 1 + PARKED_JOB_RETENTION_SECONDS);
    }

    #[test]
    fn account_keys_order_as_account_ids_and_a_closed_key_holds_no_id() {
        let id = |a: &str| AccountId::parse(a).unwrap();
        let ids = ["557058:x", "5b10", "5b10:a", "5b10_a", "5b10a", "a-1", "a1"];
        for pair in ids.windows(2) {
            let (a, b) = (id(pair[0]), id(pair[1]));
            assert!(a < b);
            assert!(account_sk(&a) < account_sk(&b), "{a:?} {b:?}");
        }
        let account = id("557058:someone");
        assert_eq!(account_of_sk(&account_sk(&account)).unwrap(), account);
        for bad in ["ACCOUNT#", "ACCOUNT#a b", "CLOSED#00", "TENANT"] {
            assert!(account_of_sk(bad).is_err(), "{bad}");
        }
        let closed = closed_sk(&ClosedAccountKey::new(&account));
        assert!(closed.starts_with(CLOSED_PREFIX) && !closed.contains("someone"));
        assert!(!closed.starts_with(ACCOUNT_PREFIX));
    }

    #[test]
    fn a_schedule_partition_is_no_tenants_and_names_its_slot() {
        assert_eq!(schedule_pk(7), "#REPORT#07");
        assert_eq!(schedule_pk(23), "#REPORT#23");
        let tenant = ClientKey::parse("ck-1").unwrap();
        assert_eq!(schedule_pk_of(&tenant), schedule_pk(report_slot(&tenant)));
        // No clientKey can be a schedule partition.
        assert!(ClientKey::parse(schedule_pk(7)).is_err());
        assert_eq!(tenant_of_schedule_sk("ck-1").unwrap(), tenant);
        assert!(tenant_of_schedule_sk("").is_err());
        assert!(tenant_of_schedule_sk("#REPORT#01").is_err());
    }

    #[cfg(feature = "dynamo")]
    #[test]
    fn a_rate_key_holds_the_subjects_hash_only() {
        let sk = rate_sk(&RateWindow::new("557058:someone", 60, 125));
        assert!(sk.starts_with(RATE_PREFIX) && sk.ends_with("#60#120"));
        assert!(!sk.contains("557058"));
    }
}
