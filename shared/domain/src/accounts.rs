//! Personal data: which Atlassian accounts each tenant's data holds, so that the app can report
//! them to Atlassian's personal data reporting API on a cycle and erase the closed ones
//! (docs/protocol.md §19).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::{AccountId, ClientKey};

/// How often an account is reported when Atlassian names no other cycle (`Cycle-Period`): 7 days.
pub const DEFAULT_REPORT_CYCLE_SECONDS: i64 = 7 * 24 * 60 * 60;

/// One account a tenant's data holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    /// The account.
    pub account: AccountId,
    /// The oldest time (unix seconds) data of this account was retrieved and kept: what a report
    /// sends as `updatedAt`.
    pub retrieved_at: i64,
    /// When it is next due for a report (unix seconds): its last report plus the cycle that
    /// report's answer asked for. `None`: never reported, due now.
    pub next_report_at: Option<i64>,
    /// Atlassian reported it closed and its data is being erased: it is never reported again,
    /// and the listing goes once the erasure is done.
    pub closed: bool,
}

impl StoredAccount {
    /// True when it should be reported at `now`: not closed, and never reported or its next
    /// report's time has come.
    pub fn due(&self, now: i64) -> bool {
        !self.closed && self.next_report_at.is_none_or(|at| at <= now)
    }
}

/// How many report slots a day has: the reporting run starts every hour and visits the tenants of
/// that hour's slot, so each tenant is visited once a day, at an hour of its own.
pub const REPORT_SLOTS: u32 = 24;

/// The report slot of a tenant (a clientKey, or a Forge installation's own tenant key): from a
/// hash of the key, so tenants spread evenly over the day rather than all reporting at once.
pub fn report_slot(tenant: &ClientKey) -> u32 {
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    let head = digest
        .iter()
        .take(4)
        .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte));
    head % REPORT_SLOTS
}

/// The slot whose tenants report in the hour that contains `now` (unix seconds).
pub fn report_slot_at(now: i64) -> u32 {
    let hour = now.div_euclid(3600).rem_euclid(i64::from(REPORT_SLOTS));
    u32::try_from(hour).unwrap_or(0)
}

/// A page of the tenants scheduled in one report slot, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduledPage {
    /// The tenants.
    pub tenants: Vec<ClientKey>,
    /// The last tenant listed, when more follow: pass it as `after` for the next page.
    pub next: Option<ClientKey>,
}

/// A page of a tenant's accounts, in accountId order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountsPage {
    /// The accounts.
    pub accounts: Vec<StoredAccount>,
    /// The last account listed, when more follow: pass it as `after` for the next page.
    pub next: Option<AccountId>,
}

/// What remains of an account Atlassian reported closed: `hex(SHA-256("closed\n" + accountId))`,
/// enough to never note or report it again, and not the accountId.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClosedAccountKey(String);

impl ClosedAccountKey {
    /// The key of `account`.
    pub fn new(account: &AccountId) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"closed\n");
        hasher.update(account.as_str().as_bytes());
        Self(hex::encode(hasher.finalize()))
    }

    /// Rebuilds a key read back from a store: 64 lower-case hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(hex.to_owned()))
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClosedAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClosedAccountKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_due_when_never_reported_or_its_time_has_come() {
        let a = StoredAccount {
            account: AccountId::parse("u-1").unwrap(),
            retrieved_at: 10,
            next_report_at: None,
            closed: false,
        };
        assert!(a.due(10));
        let reported = StoredAccount {
            next_report_at: Some(100 + DEFAULT_REPORT_CYCLE_SECONDS),
            ..a
        };
        assert!(!reported.due(100 + DEFAULT_REPORT_CYCLE_SECONDS - 1));
        assert!(reported.due(100 + DEFAULT_REPORT_CYCLE_SECONDS));
        let closed = StoredAccount {
            closed: true,
            next_report_at: None,
            ..reported
        };
        assert!(!closed.due(i64::MAX));
    }

    #[test]
    fn tenants_spread_over_every_slot() {
        let mut seen = [0u32; REPORT_SLOTS as usize];
        for i in 0..2400 {
            let key = ClientKey::parse(format!("tenant-{i}")).unwrap();
            let slot = report_slot(&key);
            assert_eq!(slot, report_slot(&key));
            seen[slot as usize] += 1;
        }
        // 100 expected per slot; a hash spreads them within a loose band.
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
        assert_eq!(report_slot_at(0), 0);
        assert_eq!(report_slot_at(3600 * 25 + 59), 1);
        assert_eq!(report_slot_at(-1), REPORT_SLOTS - 1);
    }

    #[test]
    fn a_closed_accounts_key_is_not_its_id() {
        let id = AccountId::parse("5be24ba3f91c106033269289").unwrap();
        let key = ClosedAccountKey::new(&id);
        assert!(!key.as_str().contains(id.as_str()));
        assert_eq!(ClosedAccountKey::from_hex(key.as_str()), Some(key));
        assert!(ClosedAccountKey::from_hex("xyz").is_none());
    }
}
