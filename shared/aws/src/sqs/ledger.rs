//! What this process knows about the receipts it handed out, so a stale receipt is reported as
//! [`QueueError::StaleReceipt`](outpost_core::ports::QueueError::StaleReceipt) without asking SQS.
//!
//! SQS itself does not say when a receipt is stale: DeleteMessage with a receipt of an earlier
//! delivery, or of a message already deleted, succeeds (and, with the old receipt, may leave the
//! message in place). The port promises `StaleReceipt` for both, so the queue remembers, for the
//! receipts it received:
//!
//! - the latest receipt of each message id (a newer delivery makes the earlier receipts stale);
//! - the receipts it deleted, or that SQS refused as invalid (using them again is stale).
//!
//! This is knowledge of one process only: a receipt received by another process, or forgotten
//! here, is passed to SQS and judged there. Memory is bounded: entries are dropped after
//! [`RECEIPT_TTL`] or, oldest first, past [`MAX_RECEIPTS`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a receipt is remembered: the longest SQS keeps a message in flight (12 hours).
pub(super) const RECEIPT_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most receipts remembered at once (a few MB at most).
pub(super) const MAX_RECEIPTS: usize = 10_000;

#[derive(Debug)]
struct Entry {
    /// The SQS message id, when known (a receipt this process only deleted has none).
    message_id: Option<String>,
    /// Deleted, or refused by SQS as invalid.
    gone: bool,
}

/// Receipts seen by this process, by receipt handle.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    by_receipt: HashMap<String, Entry>,
    /// Message id → its latest receipt handle.
    latest: HashMap<String, String>,
    /// Receipt handles in the order they were first remembered, for expiry.
    order: VecDeque<(Instant, String)>,
}

impl Ledger {
    /// A delivery of `message_id` with `receipt`: earlier receipts of that message are now stale.
    pub(super) fn received(&mut self, message_id: &str, receipt: &str) {
        self.prune(Instant::now());
        self.remember(receipt, Some(message_id.to_owned()), false);
        self.latest.insert(message_id.to_owned(), receipt.to_owned());
    }

    /// `receipt` was deleted, or SQS said it is invalid: using it again is stale.
    pub(super) fn gone(&mut self, receipt: &str) {
        self.prune(Instant::now());
        match self.by_receipt.get_mut(receipt) {
            Some(entry) => entry.gone = true,
            None => self.remember(receipt, None, true),
        }
    }

    /// Whether `receipt` is known to be stale: gone, or superseded by a newer delivery.
    pub(super) fn is_stale(&self, receipt: &str) -> bool {
        match self.by_receipt.get(receipt) {
            None => false,
            Some(entry) if entry.gone => true,
            Some(Entry {
                message_id: Some(id), ..
            }) => self.latest.get(id).is_some_and(|latest| latest != receipt),
            Some(_) => false,
        }
    }

    fn remember(&mut self, receipt: &str, message_id: Option<String>, gone: bool) {
        if self
            .by_receipt
            .insert(receipt.to_owned(), Entry { message_id, gone })
            .is_none()
        {
            self.order.push_back((Instant::now(), receipt.to_owned()));
        }
    }

    /// Drops entries older than the TTL, and the oldest past the size bound.
    fn prune(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > RECEIPT_TTL;
            if !expired && self.order.len() < MAX_RECEIPTS {
                break;
            }
            let Some((_, receipt)) = self.order.pop_front() else {
                break;
            };
            if let Some(Entry {
                message_id: Some(id), ..
            }) = self.by_receipt.remove(&receipt)
            {
                if self.latest.get(&id).is_some_and(|latest| *latest == receipt) {
                    self.latest.remove(&id);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_receipt.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_delivery_makes_earlier_receipts_stale() {
        let mut l = Ledger::default();
        l.received("m1", "r1");
        assert!(!l.is_stale("r1"));
        l.received("m1", "r2");
        assert!(l.is_stale("r1"));
        assert!(!l.is_stale("r2"));
        assert!(!l.is_stale("unknown"));
    }

    #[test]
    fn gone_receipts_are_stale_even_unseen_ones() {
        let mut l = Ledger::default();
        l.received("m1", "r1");
        l.gone("r1");
        assert!(l.is_stale("r1"));
        l.gone("elsewhere");
        assert!(l.is_stale("elsewhere"));
    }

    #[test]
    fn memory_is_bounded_and_oldest_go_first() {
        let mut l = Ledger::default();
        for i in 0..MAX_RECEIPTS + 50 {
            l.received(&format!("m{i}"), &format!("r{i}"));
        }
        assert!(l.len() <= MAX_RECEIPTS);
        assert!(l.latest.len() <= MAX_RECEIPTS);
        assert!(!l.by_receipt.contains_key("r0"));
        assert!(!l.latest.contains_key("m0"));
        assert!(l.by_receipt.contains_key(&format!("r{}", MAX_RECEIPTS + 49)));
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut l = Ledger::default();
        l.received("m1", "r1");
        l.received("m1", "r2");
        l.prune(Instant::now() + RECEIPT_TTL + Duration::from_secs(1));
        assert_eq!(l.len(), 0);
        assert!(l.latest.is_empty());
        assert!(!l.is_stale("r1"), "forgotten receipts are left to SQS");
    }
}
