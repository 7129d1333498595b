//! Credit-based flow control for byte channels: a sender never has more bytes in flight than
//! the receiver granted, so one slow reader (a terminal attached over a phone link) cannot make
//! the tunnel buffer without bound, and other channels keep moving.

use super::MAX_DATA;

/// The most credit a receiver may have outstanding on one channel.
pub const MAX_WINDOW: u64 = 16 * 1024 * 1024;

/// The peer broke the flow-control rules: a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("the peer sent {sent} bytes with only {allowed} bytes of credit")]
    Overrun { sent: u64, allowed: u64 },
    #[error("the peer granted credit beyond {MAX_WINDOW} bytes")]
    WindowTooLarge,
}

/// The sending half of a channel: how much the receiver will still accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    credit: u64,
}

impl SendWindow {
    pub fn new(initial: u32) -> Self {
        Self {
            credit: u64::from(initial).min(MAX_WINDOW),
        }
    }

    pub fn available(&self) -> u64 {
        self.credit
    }

    /// How many of `want` bytes may go in the next `Data` frame (0: wait for credit), and
    /// takes that much credit.
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.credit).min(MAX_DATA as u64);
        self.credit -= n;
        n as usize
    }

    /// A `Credit` frame arrived.
    pub fn grant(&mut self, bytes: u32) -> Result<(), FlowError> {
        let credit = self.credit + u64::from(bytes);
        if credit > MAX_WINDOW {
            return Err(FlowError::WindowTooLarge);
        }
        self.credit = credit;
        Ok(())
    }
}

/// The receiving half: checks the peer stays within the credit it was given, and decides when
/// to give more (once half the window has been consumed, so credit flows in few frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWindow {
    window: u64,
    /// Credit granted and not yet used by received data.
    granted: u64,
    /// Bytes the application consumed since the last grant.
    consumed: u64,
}

impl RecvWindow {
    pub fn new(window: u32) -> Self {
        let window = u64::from(window).min(MAX_WINDOW);
        Self {
            window,
            granted: window,
            consumed: 0,
        }
    }

    /// `n` bytes arrived on the channel.
    pub fn received(&mut self, n: usize) -> Result<(), FlowError> {
        let n = n as u64;
        if n > self.granted {
            return Err(FlowError::Overrun {
                sent: n,
                allowed: self.granted,
            });
        }
        self.granted -= n;
        Ok(())
    }

    /// The application consumed `n` received bytes; answers the credit to send back, if it is
    /// time to.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.consumed += n as u64;
        if self.consumed * 2 < self.window {
            return None;
        }
        let grant = self.consumed;
        self.consumed = 0;
        self.granted += grant;
        u32::try_from(grant).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_never_exceeds_its_credit_and_resumes_on_grants() {
        let mut tx = SendWindow::new(1000);
        let mut rx = RecvWindow::new(1000);
        let mut delivered = 0usize;
        let mut grants = 0;
        let total = 10_000usize;
        while delivered < total {
            let n = tx.take(total - delivered);
            if n == 0 {
                panic!("stalled with {delivered} delivered");
            }
            rx.received(n).unwrap();
            delivered += n;
            // The reader consumes everything at once, so credit comes back in one frame per
            // half window or more.
            if let Some(c) = rx.consumed(n) {
                tx.grant(c).unwrap();
                grants += 1;
            }
        }
        assert_eq!(delivered, total);
        assert!(grants <= total / 500, "{grants} credit frames");
    }

    #[test]
    fn a_slow_reader_stops_the_sender() {
        let mut tx = SendWindow::new(100);
        let mut rx = RecvWindow::new(100);
        let n = tx.take(1_000);
        assert_eq!(n, 100);
        rx.received(n).unwrap();
        assert_eq!(tx.take(1), 0, "no credit until the reader consumes");
        assert_eq!(rx.consumed(40), None, "less than half the window");
        let credit = rx.consumed(10).unwrap();
        tx.grant(credit).unwrap();
        assert_eq!(tx.take(1_000), 50);
    }

    #[test]
    fn a_peer_that_ignores_credit_is_caught() {
        let mut rx = RecvWindow::new(10);
        assert_eq!(
            rx.received(11),
            Err(FlowError::Overrun {
                sent: 11,
                allowed: 10
            })
        );
        let mut tx = SendWindow::new(0);
        assert_eq!(tx.grant(u32::MAX), Err(FlowError::WindowTooLarge));
        assert_eq!(SendWindow::new(u32::MAX).available(), MAX_WINDOW);
    }

    #[test]
    fn one_data_frame_carries_at_most_max_data() {
        let mut tx = SendWindow::new(u32::MAX);
        assert_eq!(tx.take(usize::MAX), MAX_DATA);
    }
}
