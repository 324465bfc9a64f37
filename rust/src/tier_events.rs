//! [`EventQueue`]: a cache tier's events ([`TierEvents`]) kept in a bounded queue that the bindings
//! drain, so the Python metrics hooks see every error, breaker change and drop without a Python call
//! from the request path (events are rare: failures and state changes, never per key or success).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::remote::{BreakerState, TierEvents};

/// One event of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierEvent {
    /// A call `op` failed or the open breaker refused it.
    Error(&'static str),
    /// The breaker moved to this state.
    Breaker(BreakerState),
    /// Background work `op` was dropped.
    Dropped(&'static str),
}

/// Events waiting to be drained, at most `capacity`; beyond it the oldest are dropped and counted
/// ([`EventQueue::lost`]), except that the breaker's latest state is always kept
/// ([`EventQueue::drain`] ends with it when a breaker event was lost).
#[derive(Debug)]
pub struct EventQueue {
    queue: Mutex<VecDeque<TierEvent>>,
    capacity: usize,
    lost: AtomicU64,
    last_breaker: Mutex<Option<BreakerState>>,
}

impl EventQueue {
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            lost: AtomicU64::new(0),
            last_breaker: Mutex::new(None),
        }
    }

    fn push(&self, event: TierEvent) {
        let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.len() >= self.capacity {
            queue.pop_front();
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
    }

    /// The events in the order they happened, emptying the queue.
    pub fn drain(&self) -> Vec<TierEvent> {
        let mut events: Vec<TierEvent> =
            self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..).collect();
        let last = self.last_breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let reported = events.iter().rev().find_map(|e| match e {
            TierEvent::Breaker(s) => Some(*s),
            _ => None,
        });
        if let Some(last) = last.filter(|&l| reported != Some(l)) {
            events.push(TierEvent::Breaker(last));
        }
        events
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl TierEvents for EventQueue {
    fn error(&self, op: &'static str) {
        self.push(TierEvent::Error(op));
    }

    fn breaker(&self, state: BreakerState) {
        *self.last_breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        self.push(TierEvent::Breaker(state));
    }

    fn dropped(&self, op: &'static str) {
        self.push(TierEvent::Dropped(op));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_in_order_and_keeps_the_last_breaker_state() {
        let q = EventQueue::new(3);
        q.error("read");
        q.breaker(BreakerState::Open);
        q.dropped("backfill");
        assert_eq!(
            q.drain(),
            [TierEvent::Error("read"), TierEvent::Breaker(BreakerState::Open), TierEvent::Dropped("backfill")]
        );
        assert!(q.drain().is_empty());
        q.breaker(BreakerState::HalfOpen);
        for _ in 0..5 {
            q.error("read");
        }
        assert_eq!(q.lost(), 3);
        let events = q.drain();
        assert_eq!(events.len(), 4);
        assert_eq!(events.last(), Some(&TierEvent::Breaker(BreakerState::HalfOpen)));
    }
}
