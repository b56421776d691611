//! The one way a daemon's threads are told to stop.
//!
//! A [`Stop`] is a flag set once, shared by clones. A thread that sleeps
//! between steps sleeps in [`Stop::sleep`]; one that blocks on something
//! else (a mio poll, a condition variable, a channel) registers with
//! [`Stop::on_stop`] how to wake it, and checks [`Stop::is_stopped`] when it
//! wakes. So a stop is seen at once, never after a timeout runs out, and no
//! thread is woken by a trick (a connection to its own listener, a channel
//! dropped on purpose).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Hook = Box<dyn Fn() + Send + Sync>;

/// A request to stop, shared by the threads that honour it.
#[derive(Clone, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopped: AtomicBool,
    /// The wake-ups of threads blocked elsewhere; run once, by `stop`.
    hooks: Mutex<Vec<Hook>>,
    /// Notified by `stop`, for threads in `sleep`.
    changed: Condvar,
}

impl Stop {
    /// A stop not yet asked for.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks every thread sharing this stop to stop, and wakes them. Later
    /// calls do nothing.
    pub fn stop(&self) {
        let hooks = {
            let mut hooks = self.hooks();
            if self.inner.stopped.swap(true, Ordering::SeqCst) {
                return;
            }
            self.inner.changed.notify_all();
            std::mem::take(&mut *hooks)
        };
        // Outside the lock: a hook may take locks of its own.
        for hook in hooks {
            hook();
        }
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Runs `wake` when a stop is asked for (at once, if it already was):
    /// how a thread blocked on something other than this stop is woken to
    /// see it. `wake` must not block, and is dropped once it ran, so it must
    /// not be the only owner of what carries the wake-up (a mio `Waker`
    /// closed at once takes its pending event off the poll with it).
    pub fn on_stop(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut hooks = self.hooks();
        if self.is_stopped() {
            drop(hooks);
            wake();
        } else {
            hooks.push(Box::new(wake));
        }
    }

    /// Waits `period`, or less if a stop is asked for; returns whether one
    /// was.
    pub fn sleep(&self, period: Duration) -> bool {
        let deadline = Instant::now() + period;
        let mut hooks = self.hooks();
        while !self.is_stopped() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            hooks = self
                .inner
                .changed
                .wait_timeout(hooks, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn hooks(&self) -> std::sync::MutexGuard<'_, Vec<Hook>> {
        self.inner.hooks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_sleeping_thread_wakes_when_stopped_not_when_its_sleep_ends() {
        let stop = Stop::new();
        let sleeper = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.sleep(Duration::from_secs(3600)))
        };
        stop.stop();
        assert!(sleeper.join().unwrap(), "the sleep did not report the stop");
        assert!(stop.is_stopped());
        assert!(
            stop.sleep(Duration::from_secs(3600)),
            "a stopped stop sleeps"
        );
    }

    #[test]
    fn a_sleep_without_a_stop_lasts_its_period() {
        let stop = Stop::new();
        let started = Instant::now();
        assert!(!stop.sleep(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn hooks_run_once_and_late_ones_at_once() {
        let stop = Stop::new();
        let (tx, rx) = mpsc::channel();
        let early = tx.clone();
        stop.on_stop(move || early.send("early").unwrap());
        assert!(rx.try_recv().is_err(), "a hook ran before the stop");
        stop.stop();
        stop.stop();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["early"]);
        stop.on_stop(move || tx.send("late").unwrap());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["late"]);
    }
}
