//! A circuit breaker for the distributed cache: closed → open → half-open → closed (the semantics of
//! `online_feature_store/cache/breaker.py`, which it replaces on the native path).
//!
//! - **closed**: calls go through; `failure_threshold` consecutive failures open the breaker.
//! - **open**: calls are refused (the caller skips the tier) until `reset` has passed.
//! - **half-open**: one trial call is admitted, the others are still refused; its success closes the
//!   breaker, its failure opens it for another `reset`.
//!
//! The lock is held only to change state, never during the guarded call, so request threads never
//! queue behind one slow Redis call; the closed state is read without it. Transitions are returned to
//! the caller (who reports them), so the breaker itself knows nothing of metrics.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::remote::BreakerState;

/// The name the metrics hooks use for `state` (`closed`, `half-open`, `open`).
pub fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
    }
}

fn from_u8(v: u8) -> BreakerState {
    match v {
        0 => BreakerState::Closed,
        1 => BreakerState::HalfOpen,
        _ => BreakerState::Open,
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    opened_at: Instant,
    trial_running: bool,
}

/// A thread-safe breaker. Every `allow() == true` must be followed by [`Breaker::success`] or
/// [`Breaker::failure`]; those and `allow` return the state moved to, if any, for the caller to report.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    reset: Duration,
    state: AtomicU8,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// `threshold` ≥ 1 consecutive failures open it for `reset` (> 0).
    pub fn new(threshold: u32, reset: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            reset,
            state: AtomicU8::new(BreakerState::Closed as u8),
            inner: Mutex::new(Inner { failures: 0, opened_at: Instant::now(), trial_running: false }),
        }
    }

    /// The state now (an open breaker whose reset time has passed reports `Open` until a call is
    /// admitted as the trial).
    pub fn state(&self) -> BreakerState {
        from_u8(self.state.load(Ordering::Acquire))
    }

    fn set(&self, s: BreakerState) {
        self.state.store(s as u8, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a call go ahead (at `now`)? The second value is the state moved to (`HalfOpen` for the
    /// admitted trial).
    pub fn allow_at(&self, now: Instant) -> (bool, Option<BreakerState>) {
        if self.state() == BreakerState::Closed {
            return (true, None);
        }
        let mut inner = self.lock();
        let state = self.state();
        if state == BreakerState::Closed {
            return (true, None);
        }
        if inner.trial_running || now.saturating_duration_since(inner.opened_at) < self.reset {
            return (false, None);
        }
        inner.trial_running = true;
        self.set(BreakerState::HalfOpen);
        (true, (state != BreakerState::HalfOpen).then_some(BreakerState::HalfOpen))
    }

    /// [`Breaker::allow_at`] now.
    pub fn allow(&self) -> (bool, Option<BreakerState>) {
        self.allow_at(Instant::now())
    }

    /// The admitted call worked.
    pub fn success(&self) -> Option<BreakerState> {
        if self.state() == BreakerState::Closed && self.lock().failures == 0 {
            return None;
        }
        let mut inner = self.lock();
        let changed = self.state() != BreakerState::Closed;
        inner.failures = 0;
        inner.trial_running = false;
        self.set(BreakerState::Closed);
        changed.then_some(BreakerState::Closed)
    }

    /// The admitted call failed (error or timeout), at `now`.
    pub fn failure_at(&self, now: Instant) -> Option<BreakerState> {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        inner.trial_running = false;
        match self.state() {
            BreakerState::Open => {
                inner.opened_at = now;
                None
            }
            BreakerState::Closed if inner.failures < self.threshold => None,
            _ => {
                inner.opened_at = now;
                self.set(BreakerState::Open);
                Some(BreakerState::Open)
            }
        }
    }

    /// [`Breaker::failure_at`] now.
    pub fn failure(&self) -> Option<BreakerState> {
        self.failure_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESET: Duration = Duration::from_secs(2);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = Breaker::new(3, RESET);
        let t = Instant::now();
        assert_eq!(b.failure_at(t), None);
        assert_eq!(b.success(), None); // a success resets the count
        assert_eq!(b.failure_at(t), None);
        assert_eq!(b.failure_at(t), None);
        assert_eq!(b.failure_at(t), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.allow_at(t + Duration::from_secs(1)), (false, None));
    }

    #[test]
    fn half_open_admits_one_trial() {
        let b = Breaker::new(1, RESET);
        let t = Instant::now();
        b.failure_at(t);
        let later = t + RESET;
        assert_eq!(b.allow_at(later), (true, Some(BreakerState::HalfOpen)));
        assert_eq!(b.allow_at(later), (false, None)); // the trial is running
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.success(), Some(BreakerState::Closed));
        assert_eq!(b.allow_at(later), (true, None));
    }

    #[test]
    fn a_failed_trial_opens_it_for_another_period() {
        let b = Breaker::new(2, RESET);
        let t = Instant::now();
        b.failure_at(t);
        b.failure_at(t);
        let trial = t + RESET;
        assert!(b.allow_at(trial).0);
        assert_eq!(b.failure_at(trial), Some(BreakerState::Open));
        assert_eq!(b.allow_at(trial + Duration::from_secs(1)), (false, None));
        assert_eq!(b.allow_at(trial + RESET), (true, Some(BreakerState::HalfOpen)));
    }

    #[test]
    fn concurrent_callers_get_one_trial() {
        let b = std::sync::Arc::new(Breaker::new(1, RESET));
        let t = Instant::now();
        b.failure_at(t);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.allow_at(t + RESET).0)
            })
            .collect();
        let admitted = threads.into_iter().map(|h| h.join().unwrap()).filter(|&a| a).count();
        assert_eq!(admitted, 1);
    }
}
