//! Bounded FIFO cache of recently generated slots, so several subscriptions
//! streaming the same slot share one generated `Arc<SlotData>`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::slot::SlotData;

/// Default number of slots kept by [`crate::Ledger`].
pub const DEFAULT_SLOT_CACHE_CAPACITY: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<u64, Arc<SlotData>>,
    order: VecDeque<u64>,
}

/// A thread-safe cache holding at most `capacity` slots (oldest insertion
/// evicted first). A capacity of 0 disables caching.
#[derive(Debug)]
pub(crate) struct SlotCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl SlotCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached contents stay valid even if a holder panicked.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, slot: u64) -> Option<Arc<SlotData>> {
        self.lock().map.get(&slot).cloned()
    }

    /// Inserts `data` unless the slot is already cached (another thread won
    /// the race); returns the `Arc` that is now canonical for the slot.
    pub fn insert(&self, data: Arc<SlotData>) -> Arc<SlotData> {
        if self.capacity == 0 {
            return data;
        }
        let mut inner = self.lock();
        if let Some(existing) = inner.map.get(&data.slot) {
            return existing.clone();
        }
        while inner.order.len() >= self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
        inner.order.push_back(data.slot);
        inner.map.insert(data.slot, data.clone());
        data
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
