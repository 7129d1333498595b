//! Shape offsets and handles, as they travel in `offset`, `handle` and the `electric-*`
//! headers.
//!
//! An offset `{lsn}_0` is a position in the org's change log: every change up to `lsn` is
//! applied. While a snapshot is being delivered, `{L}_{r}` (r ≥ 1) means "the snapshot taken
//! at log position L, delivered up to SQLite rowid r of the table". A handle is
//! `{shape hash}-{L0}`, L0 being the log position of the snapshot it started with: handles are
//! minted only when a snapshot starts, and the log only grows, so a handle names one snapshot
//! of one shape.

use super::filter::Filter;
use super::table::Table;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Where a request starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offset {
    /// `-1`: a new snapshot.
    Start,
    /// `now`: nothing old, only what comes next.
    Now,
    /// `{lsn}_0`: after log position `lsn`.
    Log(i64),
    /// `{at}_{rowid}`: the snapshot taken at log position `at`, delivered up to `rowid`.
    Snapshot { at: i64, rowid: i64 },
}

/// A non-negative decimal integer that fits an i64 (no sign, no spaces).
fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Offset {
    /// `-1`, `now` or `<int>_<int>`; anything else is `None` (a 400).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "-1" => Some(Self::Start),
            "now" => Some(Self::Now),
            _ => {
                let (a, b) = s.split_once('_')?;
                match (number(a)?, number(b)?) {
                    (lsn, 0) => Some(Self::Log(lsn)),
                    (at, rowid) => Some(Self::Snapshot { at, rowid }),
                }
            }
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("-1"),
            Self::Now => f.write_str("now"),
            Self::Log(lsn) => write!(f, "{lsn}_0"),
            Self::Snapshot { at, rowid } => write!(f, "{at}_{rowid}"),
        }
    }
}

/// `{16 hex digits of the shape's hash}-{log position of its snapshot}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub hash: String,
    pub at: i64,
}

impl Handle {
    pub fn new(table: Table, filter: &Filter, at: i64) -> Self {
        Self {
            hash: shape_hash(table, filter),
            at,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (hash, at) = s.split_once('-')?;
        let hex = hash.len() == 16
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return None;
        }
        Some(Self {
            hash: hash.to_owned(),
            at: number(at)?,
        })
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.at)
    }
}

/// 16 hex digits of SHA-256 over the table and the normalised filter (params substituted).
pub fn shape_hash(table: Table, filter: &Filter) -> String {
    let digest = Sha256::digest(format!("{}\n{}", table.name(), filter.canonical()));
    hex::encode(digest.get(..8).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn offsets_round_trip_and_refuse_junk() {
        for (s, o) in [
            ("-1", Offset::Start),
            ("now", Offset::Now),
            ("0_0", Offset::Log(0)),
            ("42_0", Offset::Log(42)),
            ("42_7", Offset::Snapshot { at: 42, rowid: 7 }),
        ] {
            assert_eq!(Offset::parse(s), Some(o), "{s}");
            assert_eq!(o.to_string(), s);
        }
        for bad in [
            "",
            "-2",
            "1",
            "1_",
            "_1",
            "a_0",
            "1_-1",
            "-1_0",
            "1_0_0",
            "+1_0",
            " 1_0",
            "99999999999999999999_0",
            "0_inf",
            "NOW",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn handles_name_the_shape_and_its_snapshot() {
        let none = Filter::default();
        let h = Handle::new(Table::Tasks, &none, 12);
        assert_eq!(h.hash.len(), 16);
        assert_eq!(Handle::parse(&h.to_string()), Some(h.clone()));
        assert_ne!(Handle::new(Table::Projects, &none, 12).hash, h.hash);
        let f = Filter::parse(Table::Tasks, Some("id = 'x'"), &BTreeMap::new()).unwrap();
        assert_ne!(Handle::new(Table::Tasks, &f, 12).hash, h.hash);
        assert_eq!(Handle::new(Table::Tasks, &none, 12), h, "stable");
        for bad in [
            "",
            "abc-1",
            "0123456789abcdef",
            "0123456789abcdef-",
            "0123456789ABCDEF-1",
            "0123456789abcdeg-1",
            "0123456789abcdef--1",
        ] {
            assert_eq!(Handle::parse(bad), None, "{bad}");
        }
    }
}
