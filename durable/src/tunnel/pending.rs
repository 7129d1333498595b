//! Requests awaiting their answers: ids, deadlines and a cap, so a peer that never answers
//! cannot grow the table without bound and every caller hears back by its deadline.

use std::collections::BTreeMap;

/// The table is full: answer the caller `Overloaded` instead of queueing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} requests are already pending")]
pub struct Full(pub usize);

/// Pending requests by id, each with its deadline (ms since the epoch) and the caller's `T`
/// (such as the channel that delivers the answer).
#[derive(Debug)]
pub struct Pending<T> {
    entries: BTreeMap<u64, (i64, T)>,
    next_id: u64,
    cap: usize,
}

impl<T> Pending<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            next_id: 1,
            cap,
        }
    }

    /// Registers a request answerable until `deadline`; answers its id.
    pub fn insert(&mut self, deadline: i64, value: T) -> Result<u64, Full> {
        if self.entries.len() >= self.cap {
            return Err(Full(self.entries.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, (deadline, value));
        Ok(id)
    }

    /// The answer for `id` arrived (or the caller gave up): its entry, if it was still pending.
    pub fn take(&mut self, id: u64) -> Option<T> {
        self.entries.remove(&id).map(|(_, v)| v)
    }

    /// Removes and answers every request whose deadline has passed.
    pub fn expire(&mut self, now: i64) -> Vec<(u64, T)> {
        let late: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        late.into_iter()
            .filter_map(|id| self.entries.remove(&id).map(|(_, v)| (id, v)))
            .collect()
    }

    /// Removes everything (the connection is gone): every caller must be told.
    pub fn drain(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|(id, (_, v))| (id, v))
            .collect()
    }

    /// The earliest deadline, to schedule the next expiry check.
    pub fn next_deadline(&self) -> Option<i64> {
        self.entries.values().map(|(d, _)| *d).min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_answers_deadlines_and_the_cap() {
        let mut p = Pending::new(2);
        let a = p.insert(100, "a").unwrap();
        let b = p.insert(50, "b").unwrap();
        assert_ne!(a, b);
        assert_eq!(p.insert(10, "c"), Err(Full(2)));
        assert_eq!(p.next_deadline(), Some(50));
        assert_eq!(p.expire(49), vec![]);
        assert_eq!(p.expire(50), vec![(b, "b")]);
        assert_eq!(p.take(b), None, "an expired request cannot be answered");
        assert_eq!(p.take(a), Some("a"));
        assert_eq!(p.take(a), None, "answered once");
        let c = p.insert(10, "c").unwrap();
        assert!(c > b, "ids are never reused");
        assert_eq!(p.drain(), vec![(c, "c")]);
        assert!(p.is_empty());
    }
}
