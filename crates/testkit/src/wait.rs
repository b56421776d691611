//! Waiting for a state a test needs: poll until it holds, with a generous
//! deadline, and on failure say what was seen last. Never a fixed sleep.

use std::time::{Duration, Instant};

/// How long a test waits for a state it needs before failing: long enough
/// for a 2-core machine busy with other work (a healthy run needs seconds;
/// only a real failure waits this out).
pub const GENEROUS: Duration = Duration::from_secs(120);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds; panics after `timeout`, naming `what`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(timeout, what, || check().then_some(()).ok_or("not yet"));
}

/// Polls `observe` until it returns `Ok`, and returns that; after
/// `timeout`, panics with the last thing it saw instead (the `Err`).
#[track_caller]
pub fn wait_for<T, E: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut observe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match observe() {
            Ok(done) => return done,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Polls `check` until it holds; how long that took, or `None` once
/// `timeout` passed (for a harness that reports a figure, not a failure).
pub fn time_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}
