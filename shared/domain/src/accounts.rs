//! Personal data: which Atlassian accounts each tenant's data holds, so that the app can report
//! them to Atlassian's personal data reporting API on a cycle and erase the closed ones
//! (docs/protocol.md §19).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::AccountId;

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
    /// When it was last reported (unix seconds), if ever: the cycle counts from here.
    pub reported_at: Option<i64>,
}

impl StoredAccount {
    /// True when it should be reported at `now`: never reported, or a whole cycle ago.
    pub fn due(&self, now: i64, cycle_seconds: i64) -> bool {
        self.reported_at
            .is_none_or(|at| at.saturating_add(cycle_seconds.max(1)) <= now)
    }
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
    fn an_account_is_due_once_a_cycle() {
        let a = StoredAccount {
            account: AccountId::parse("u-1").unwrap(),
            retrieved_at: 10,
            reported_at: None,
        };
        assert!(a.due(10, DEFAULT_REPORT_CYCLE_SECONDS));
        let reported = StoredAccount {
            reported_at: Some(100),
            ..a
        };
        assert!(!reported.due(
            100 + DEFAULT_REPORT_CYCLE_SECONDS - 1,
            DEFAULT_REPORT_CYCLE_SECONDS
        ));
        assert!(reported.due(
            100 + DEFAULT_REPORT_CYCLE_SECONDS,
            DEFAULT_REPORT_CYCLE_SECONDS
        ));
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
