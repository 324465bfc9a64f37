//! The core's tokio runtime and the one way the bindings wait for a store call ([`block_on`]).
//!
//! The runtime is created on first use of [`runtime`] (a network store's client asks for it when it is
//! opened), with [`WORKER_THREADS`] worker threads named `ofs-io` (or as many as [`set_worker_threads`]
//! set before): they drive the sockets and run the
//! clients' background tasks, while each request's future runs on the thread that waits for it (a
//! gRPC handler thread with the GIL released), so the workers only ever do I/O. A process that only
//! uses `SQLite` (whose calls complete when first polled) never starts it: [`block_on`] then polls on
//! the calling thread and parks it between wake-ups.
//!
//! Never call [`block_on`] from a task of the runtime itself (tokio refuses to nest runtimes): code
//! running on it awaits.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::Runtime;

/// Worker threads of the runtime unless [`set_worker_threads`] says otherwise: for a library, I/O only
/// (the requests' own work runs on their callers' threads), so two keep the sockets of a busy process
/// moving. The serving front runs every call on the runtime, so `ofs serve` sizes it to its CPUs.
pub const WORKER_THREADS: usize = 2;

/// Most worker threads [`set_worker_threads`] takes.
pub const MAX_WORKER_THREADS: usize = 1024;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static THREADS: AtomicUsize = AtomicUsize::new(WORKER_THREADS);

/// Sets the runtime's worker threads (1 to [`MAX_WORKER_THREADS`]); only before it starts.
pub fn set_worker_threads(threads: usize) -> Result<(), String> {
    if !(1..=MAX_WORKER_THREADS).contains(&threads) {
        return Err(format!("io threads must be 1 to {MAX_WORKER_THREADS}, got {threads}"));
    }
    if RUNTIME.get().is_some() {
        return Err("io threads: the runtime has started already".to_owned());
    }
    THREADS.store(threads, Ordering::Relaxed);
    Ok(())
}

/// The runtime's worker threads (as it has or will start with).
pub fn worker_threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The runtime, created on first use.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("ofs-io")
            .enable_all()
            .build()
            // Only fails when the OS refuses threads: nothing of the store layer can work then.
            .expect("the store runtime cannot start its threads")
    })
}

/// Whether the runtime has been started (by a network store).
pub fn started() -> bool {
    RUNTIME.get().is_some()
}

/// Runs `future` to completion on the calling thread: inside the runtime's context once a network store
/// started it, else polled here with the thread parked between wake-ups.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match RUNTIME.get() {
        Some(rt) => rt.block_on(future),
        None => park_on(future),
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn park_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_set_only_in_range_and_before_the_start() {
        assert!(set_worker_threads(0).unwrap_err().contains("1 to 1024, got 0"));
        assert!(set_worker_threads(MAX_WORKER_THREADS + 1).is_err());
        let _ = runtime();
        assert!(set_worker_threads(3).unwrap_err().contains("started already"));
        assert_eq!(worker_threads(), runtime().metrics().num_workers());
    }

    #[test]
    fn futures_complete_with_and_without_the_runtime() {
        // Without it: a future woken from another thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(park_on(rx).unwrap(), 7);
        sender.join().unwrap();
        // With it: timers need its context.
        runtime();
        assert!(started());
        let got = block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            3
        });
        assert_eq!(got, 3);
    }
}
