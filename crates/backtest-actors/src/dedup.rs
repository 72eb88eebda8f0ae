//! Exactly-once delivery per notification stream.
//!
//! A stream is one subscription kind for one program id. On reconnect the
//! client resubscribes with `replayFromSlot = cursor`, and the server resends
//! that slot in full (the cursor is inclusive) before moving on. Without
//! filtering the consumer would see the boundary slot twice.
//!
//! Because the server sends a stream's notifications in non-decreasing slot
//! order, everything below the cursor has already been delivered, and
//! everything above it is new. Only the boundary slot itself is ambiguous, so
//! only the keys delivered at the highest slot need to be remembered: memory
//! is bounded by one slot's worth of keys, however long the run.

use std::{collections::HashSet, hash::Hash};

/// What to do with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: hand it to the consumer.
    Deliver,
    /// Already delivered (a replay): drop it.
    Duplicate,
}

/// Deduplication state of one stream. `K` identifies a notification within
/// its slot: the signature for transactions, a [`DiffKey`] for account diffs.
#[derive(Debug, Clone)]
pub struct StreamDedup<K> {
    cursor: Option<u64>,
    seen_at_cursor: HashSet<K>,
    duplicates: u64,
}

impl<K: Hash + Eq> Default for StreamDedup<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq> StreamDedup<K> {
    /// A stream that has delivered nothing yet.
    pub fn new() -> Self {
        Self {
            cursor: None,
            seen_at_cursor: HashSet::new(),
            duplicates: 0,
        }
    }

    /// Decide on one notification and record it when delivered.
    ///
    /// * below the cursor: a replay of an older slot, `Duplicate`;
    /// * at the cursor: `Duplicate` if this key was delivered, else `Deliver`
    ///   (the rest of a partially delivered boundary slot);
    /// * above the cursor: the cursor moves, older keys are forgotten,
    ///   `Deliver`.
    ///
    /// Call it only for notifications that will really be handed on: the
    /// cursor must name a slot the consumer has seen.
    pub fn admit(&mut self, slot: u64, key: K) -> Admission {
        match self.cursor {
            Some(cursor) if slot < cursor => {
                self.duplicates += 1;
                Admission::Duplicate
            }
            Some(cursor) if slot == cursor => {
                if self.seen_at_cursor.insert(key) {
                    Admission::Deliver
                } else {
                    self.duplicates += 1;
                    Admission::Duplicate
                }
            }
            _ => {
                self.cursor = Some(slot);
                self.seen_at_cursor.clear();
                self.seen_at_cursor.insert(key);
                Admission::Deliver
            }
        }
    }

    /// The highest slot delivered: the `replayFromSlot` for a resubscribe.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// How many notifications were dropped as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// How many keys are remembered (those delivered at the cursor slot).
    pub fn remembered(&self) -> usize {
        self.seen_at_cursor.len()
    }
}

/// Identity of an account diff within a stream. Every field the wire may omit
/// is optional here too, so two diffs that differ only in a missing field are
/// still told apart as the server sent them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiffKey {
    /// Slot of the diff (`context.slot`).
    pub slot: u64,
    /// Account that changed.
    pub account: Option<String>,
    /// Transaction that changed it.
    pub signature: Option<String>,
    /// Position of that transaction in the slot.
    pub tx_index: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admission::{Deliver, Duplicate};

    fn sig(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn fresh_stream_delivers_and_tracks_cursor() {
        let mut d = StreamDedup::new();
        assert_eq!(d.cursor(), None);
        assert_eq!(d.admit(10, sig("a")), Deliver);
        assert_eq!(d.admit(10, sig("b")), Deliver);
        assert_eq!(d.admit(11, sig("c")), Deliver);
        assert_eq!(d.cursor(), Some(11));
        assert_eq!(d.duplicates(), 0);
        assert_eq!(d.remembered(), 1);
    }

    #[test]
    fn replay_of_boundary_slot_drops_exactly_the_delivered_ones() {
        let mut d = StreamDedup::new();
        for (slot, s) in [(9, "x"), (10, "a"), (10, "b"), (10, "c")] {
            assert_eq!(d.admit(slot, sig(s)), Deliver);
        }
        // Reconnect with replayFromSlot = 10: the whole slot comes again.
        assert_eq!(d.cursor(), Some(10));
        assert_eq!(d.admit(10, sig("a")), Duplicate);
        assert_eq!(d.admit(10, sig("b")), Duplicate);
        assert_eq!(d.admit(10, sig("c")), Duplicate);
        assert_eq!(d.admit(11, sig("d")), Deliver);
        assert_eq!(d.duplicates(), 3);
    }

    #[test]
    fn partially_delivered_boundary_slot_delivers_the_rest() {
        let mut d = StreamDedup::new();
        assert_eq!(d.admit(10, sig("a")), Deliver);
        assert_eq!(d.admit(10, sig("b")), Deliver);
        // Dropped before "c" and "d" arrived; the replay sends all four.
        let replay: Vec<Admission> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| d.admit(10, sig(s)))
            .collect();
        assert_eq!(replay, [Duplicate, Duplicate, Deliver, Deliver]);
        assert_eq!(d.duplicates(), 2);
        assert_eq!(d.remembered(), 4);
    }

    #[test]
    fn lower_slots_are_dropped() {
        let mut d = StreamDedup::new();
        assert_eq!(d.admit(20, sig("a")), Deliver);
        assert_eq!(d.admit(19, sig("new-but-old-slot")), Duplicate);
        assert_eq!(d.admit(5, sig("a")), Duplicate);
        assert_eq!(d.cursor(), Some(20));
        assert_eq!(d.duplicates(), 2);
    }

    #[test]
    fn moving_past_the_cursor_forgets_old_keys() {
        let mut d = StreamDedup::new();
        for s in ["a", "b", "c"] {
            d.admit(1, sig(s));
        }
        assert_eq!(d.remembered(), 3);
        // The same signature in a later slot is a different notification.
        assert_eq!(d.admit(2, sig("a")), Deliver);
        assert_eq!(d.remembered(), 1);
        assert_eq!(d.admit(2, sig("a")), Duplicate);
    }

    #[test]
    fn duplicate_within_a_live_slot_is_counted() {
        let mut d = StreamDedup::new();
        d.admit(3, sig("a"));
        assert_eq!(d.admit(3, sig("a")), Duplicate);
        assert_eq!(d.duplicates(), 1);
    }

    #[test]
    fn diff_keys_distinguish_optional_fields() {
        let key = |account: Option<&str>, signature: Option<&str>, tx_index: Option<u32>| DiffKey {
            slot: 7,
            account: account.map(str::to_string),
            signature: signature.map(str::to_string),
            tx_index,
        };
        let mut d = StreamDedup::new();
        assert_eq!(d.admit(7, key(Some("acc"), Some("s1"), Some(0))), Deliver);
        assert_eq!(d.admit(7, key(Some("acc"), Some("s1"), Some(1))), Deliver);
        assert_eq!(d.admit(7, key(Some("acc"), None, None)), Deliver);
        assert_eq!(d.admit(7, key(Some("other"), Some("s1"), Some(0))), Deliver);
        // Replay.
        assert_eq!(d.admit(7, key(Some("acc"), Some("s1"), Some(0))), Duplicate);
        assert_eq!(d.admit(7, key(Some("acc"), None, None)), Duplicate);
        assert_eq!(d.admit(7, key(None, None, None)), Deliver);
        assert_eq!(d.duplicates(), 2);
    }
}
