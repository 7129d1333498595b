//! Heartbeats: each side pings every [`PING_EVERY_MS`] and treats the connection as dead when
//! it has heard nothing (no frame of any kind) for [`DEAD_AFTER_MS`]. A half-open socket (the
//! peer vanished without a FIN, a laptop lid closed) is therefore noticed within 30 seconds
//! even though TCP itself would wait for minutes.

/// How often a side pings.
pub const PING_EVERY_MS: i64 = 10_000;
/// Silence after which the connection is dead (close with `Stale`, then reconnect).
pub const DEAD_AFTER_MS: i64 = 25_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    last_heard: i64,
    last_ping: i64,
}

impl Liveness {
    pub fn new(now: i64) -> Self {
        Self {
            last_heard: now,
            last_ping: now,
        }
    }

    /// Any frame arrived.
    pub fn heard(&mut self, now: i64) {
        self.last_heard = self.last_heard.max(now);
    }

    /// True when a ping is due; marks it sent.
    pub fn ping_due(&mut self, now: i64) -> bool {
        if now - self.last_ping >= PING_EVERY_MS {
            self.last_ping = now;
            true
        } else {
            false
        }
    }

    pub fn dead(&self, now: i64) -> bool {
        now - self.last_heard >= DEAD_AFTER_MS
    }

    pub fn last_heard(&self) -> i64 {
        self.last_heard
    }

    /// When to look again: the next ping or the moment the silence becomes fatal.
    pub fn next_check(&self) -> i64 {
        (self.last_ping + PING_EVERY_MS).min(self.last_heard + DEAD_AFTER_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_dead_within_30_seconds_and_a_chatty_one_never() {
        let mut l = Liveness::new(0);
        let mut t = 0;
        let mut pings = 0;
        while !l.dead(t) {
            if l.ping_due(t) {
                pings += 1;
            }
            t = l.next_check();
        }
        assert!(t <= 30_000, "noticed only after {t} ms");
        assert!(pings >= 2, "{pings} pings before giving up");

        let mut l = Liveness::new(0);
        for t in (0..600_000).step_by(1_000) {
            l.heard(t);
            assert!(!l.dead(t));
        }
    }
}
