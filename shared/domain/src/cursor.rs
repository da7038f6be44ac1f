//! Paging through the audit trail: the cursor a listing hands out and takes back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::error::ParseError;

/// Where a listing of the audit trail stopped: the position of the last record it returned. Handed
/// back as `before`, it asks for the records strictly after that one in listing order (older).
///
/// The token is opaque to callers; its form is `<at_ms as 20 digits>-<32 lower-case hex digits>`:
/// the record's time, then the id the store gave the record, which orders records of the same
/// millisecond. Records are listed in descending order of this token, so a listing that follows
/// `next` from page to page neither skips nor repeats a record, whatever their times. Times before
/// 1970 count as 0 (as in the stores' keys).
///
/// [`AuditCursor::parse`] refuses anything else (it comes from a query string), so a store never
/// builds a key from unchecked input.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditCursor(String);

impl AuditCursor {
    /// Length of a token: 20 digits, `-`, 32 hex digits.
    pub const LEN: usize = 20 + 1 + Self::ID_LEN;
    /// Length of the record id part.
    pub const ID_LEN: usize = 32;

    /// Parses a token as [`AuditCursor::as_str`] wrote it.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        const BAD: ParseError = ParseError::new(
            "audit cursor",
            "is not 20 digits, a dash and 32 lower-case hex digits",
        );
        if value.len() != Self::LEN {
            return Err(BAD);
        }
        let (ms, rest) = value.split_at_checked(20).ok_or(BAD)?;
        let id = rest.strip_prefix('-').ok_or(BAD)?;
        if !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
        // 20 digits can exceed i64: such a time was never written.
        ms.parse::<i64>().map_err(|_| BAD)?;
        if !is_id(id) {
            return Err(BAD);
        }
        Ok(Self(value.to_owned()))
    }

    /// The cursor of a record at `at_ms` (clamped to 0 and up) with this store id (32 lower-case
    /// hex digits, e.g. a simple UUID).
    pub fn new(at_ms: i64, id: &str) -> Result<Self, ParseError> {
        if !is_id(id) {
            return Err(ParseError::new(
                "audit record id",
                "is not 32 lower-case hex digits",
            ));
        }
        Ok(Self(format!("{:020}-{id}", at_ms.max(0))))
    }

    /// The token, for an answer (`next`) and a query string (`?before=`): URL-safe as it is.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time part, 20 zero-padded digits (the form the stores' keys use).
    pub fn ms_digits(&self) -> &str {
        self.0.get(..20).unwrap_or_default()
    }

    /// The record id part.
    pub fn id(&self) -> &str {
        self.0.get(21..).unwrap_or_default()
    }
}

fn is_id(id: &str) -> bool {
    id.len() == AuditCursor::ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for AuditCursor {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditCursor({})", self.0)
    }
}

impl Serialize for AuditCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AuditCursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One page of an audit listing, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// At most the requested number of records, newest first, none expired.
    pub records: Vec<AuditRecord>,
    /// Present when more (older) records exist: pass it as `before` for the next page.
    pub next: Option<AuditCursor>,
}

impl AuditPage {
    /// A page from entries already in listing order (newest first), read up to `limit + 1` of them:
    /// the first `limit` are the page, and an entry beyond them means there is a next page, which
    /// starts after the page's last record.
    pub fn from_listing(entries: Vec<(AuditCursor, AuditRecord)>, limit: usize) -> Self {
        let more = entries.len() > limit;
        let mut records = Vec::with_capacity(entries.len().min(limit));
        let mut last = None;
        for (cursor, record) in entries.into_iter().take(limit) {
            records.push(record);
            last = Some(cursor);
        }
        Self {
            records,
            next: if more { last } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_cursor_round_trips_through_its_token() {
        let c = AuditCursor::new(1_700_000_000_123, ID).unwrap();
        assert_eq!(c.as_str(), format!("00000001700000000123-{ID}"));
        assert_eq!(c.to_string(), c.as_str());
        assert_eq!(AuditCursor::parse(c.as_str()).unwrap(), c);
        assert_eq!(c.ms_digits(), "00000001700000000123");
        assert_eq!(c.id(), ID);
        assert_eq!(
            AuditCursor::new(-5, ID).unwrap().ms_digits(),
            "0".repeat(20)
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AuditCursor>(&json).unwrap(), c);
    }

    #[test]
    fn tokens_order_as_time_then_id() {
        let a = AuditCursor::new(5, ID).unwrap();
        let b = AuditCursor::new(5, "1123456789abcdef0123456789abcdef").unwrap();
        let c = AuditCursor::new(40, "0000000000000000000000000000000a").unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = format!("00000001700000000123-{ID}");
        assert!(AuditCursor::parse(&good).is_ok());
        for bad in [
            String::new(),
            "x".into(),
            good.to_uppercase(),
            good.replace('-', "#"),
            format!("{good}0"),
            good[1..].to_owned(),
            format!("-0000000000000000001-{ID}"),
            format!("+0000000000000000001-{ID}"),
            format!("99999999999999999999-{ID}"),
            format!("00000001700000000123-{}g", &ID[1..]),
            format!("00000001700000000123-{}é", &ID[2..]),
            format!("0000000170000000012é-{}", &ID[1..]),
            format!("00000001700000000123-{}\n", &ID[1..]),
            "00000001700000000123-../../../../../../../../../etc/p".into(),
        ] {
            assert!(AuditCursor::parse(&bad).is_err(), "{bad:?} was accepted");
        }
        assert!(AuditCursor::new(1, "ABC").is_err());
        assert!(serde_json::from_str::<AuditCursor>("\"nope\"").is_err());
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_an_entry_was_left_over() {
        let record = |job: &str| AuditRecord {
            client_key: crate::ClientKey::parse("ck").unwrap(),
            page_id: crate::PageId::parse("1").unwrap(),
            at_ms: 1,
            version_before: None,
            version_after: None,
            acted_as: crate::ActedAs::App,
            strategy: crate::EditStrategy::AsApp,
            outcome: crate::EditOutcome::Unchanged,
            reason: String::new(),
            job_id: job.into(),
        };
        let cursor = |n: u8| AuditCursor::new(i64::from(n), ID).unwrap();
        let entries = vec![(cursor(3), record("c")), (cursor(2), record("b"))];
        let page = AuditPage::from_listing(entries.clone(), 2);
        assert_eq!((page.records.len(), page.next), (2, None));
        let page = AuditPage::from_listing(entries.clone(), 1);
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.next, Some(cursor(3)));
        let page = AuditPage::from_listing(entries, 0);
        assert!(page.records.is_empty());
        assert_eq!(page.next, None);
    }
}
