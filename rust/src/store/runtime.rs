//! The core's tokio runtime and the one way the bindings wait for a store call ([`block_on`]).
//!
//! The runtime is created on first use of [`runtime`] (a network store's client asks for it when it is
//! opened), with [`WORKER_THREADS`] worker threads named `ofs-io`: they drive the sockets and run the
//! clients' background tasks, while each request's future runs on the thread that waits for it (a
//! gRPC handler thread with the GIL released), so the workers only ever do I/O. A process that only
//! uses `SQLite` (whose calls complete when first polled) never starts it: [`block_on`] then polls on
//! the calling thread and parks it between wake-ups.
//!
//! Never call [`block_on`] from a task of the runtime itself (tokio refuses to nest runtimes): code
//! running on it awaits.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::Runtime;

/// Worker threads of the runtime: I/O only (the requests' own work runs on their callers' threads),
/// so two keep the sockets of a busy server moving on the 2-core machines this runs on.
pub const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime, created on first use.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
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
