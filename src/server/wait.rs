//! Clients that wait for the served data to reach a position: `RKV.WAIT`,
//! and reads under `RKV.READAFTER`. A waiting client is parked in its
//! worker's event loop (its request kept, its socket no longer read), so a
//! thousand of them cost a thousand requests' memory, not a thread each.
//! The follower calls [`Waiters::advanced`] whenever its data moves on,
//! which wakes the workers while any client is parked; a worker also wakes
//! at the nearest deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

/// What a parked request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The position (the master's sequence number) the served data must hold.
    pub position: u64,
    /// When to give up; `None` waits as long as the client stays.
    pub deadline: Option<Instant>,
    /// How long the client asked to wait, for the timeout's error.
    pub timeout: Duration,
}

/// The workers to wake when the served data moves on, and how many
/// clients wait.
#[derive(Default)]
pub struct Waiters {
    wakers: Mutex<Vec<Arc<Waker>>>,
    parked: AtomicUsize,
}

impl Waiters {
    /// Wakes `waker`'s worker whenever the data moves on while a client waits.
    pub(super) fn register(&self, waker: Arc<Waker>) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
    }

    /// The served data has moved on: wakes the workers if anyone waits.
    /// Costs one atomic load when no one does.
    pub fn advanced(&self) {
        // Pairs with `park`: a client counted before it looks at the
        // position is woken by any advance it did not see.
        if self.parked.load(Ordering::SeqCst) == 0 {
            return;
        }
        for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = waker.wake();
        }
    }

    /// Counts a client as waiting; call before the last look at the
    /// position.
    pub(super) fn park(&self) {
        self.parked.fetch_add(1, Ordering::SeqCst);
    }

    /// A waiting client stopped waiting (answered, or gone).
    pub(super) fn unpark(&self) {
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many clients wait now (`INFO clients`' `blocked_clients`).
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}
