//! `WATCH`: which connections watch which keys, so that a commit can spoil
//! the transactions of those watching a key it wrote. Redis keeps the same
//! map from key to watchers per database; rkv has one database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Every watched key and its watchers.
#[derive(Default)]
pub(crate) struct Watches {
    keys: Mutex<HashMap<Vec<u8>, Vec<Watcher>>>,
    /// How many (key, watcher) pairs there are: a commit skips the lock
    /// when there are none, the usual case.
    count: AtomicUsize,
}

/// One connection's watch: the flag its EXEC checks.
#[derive(Clone)]
pub(crate) struct Watcher {
    conn: u64,
    spoiled: Arc<AtomicBool>,
}

impl Watcher {
    /// A watcher for connection `conn`, not spoiled.
    pub fn new(conn: u64) -> Watcher {
        Watcher {
            conn,
            spoiled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a watched key was written since it was watched.
    pub fn spoiled(&self) -> bool {
        self.spoiled.load(Ordering::SeqCst)
    }
}

impl Watches {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<Watcher>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `watcher` watches `key` (once, however often it asks).
    pub fn watch(&self, key: &[u8], watcher: &Watcher) {
        let mut keys = self.keys();
        let watchers = keys.entry(key.to_vec()).or_default();
        if !watchers.iter().any(|w| w.conn == watcher.conn) {
            watchers.push(watcher.clone());
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `watcher` stops watching `keys`.
    pub fn unwatch<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>, watcher: &Watcher) {
        let mut map = self.keys();
        for key in keys {
            let Some(watchers) = map.get_mut(key) else {
                continue;
            };
            let before = watchers.len();
            watchers.retain(|w| w.conn != watcher.conn);
            self.count
                .fetch_sub(before - watchers.len(), Ordering::SeqCst);
            if watchers.is_empty() {
                map.remove(key);
            }
        }
    }

    /// A commit wrote `keys`: spoils their watchers' transactions.
    pub fn touched<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let map = self.keys();
        for key in keys {
            for watcher in map.get(key).into_iter().flatten() {
                watcher.spoiled.store(true, Ordering::SeqCst);
            }
        }
    }

    /// A commit removed every key (`FLUSHDB`): spoils the watchers of the
    /// keys that `existed`, as Redis does.
    pub fn flushed(&self, existed: impl Fn(&[u8]) -> bool) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let map = self.keys();
        for (key, watchers) in map.iter() {
            if existed(key) {
                for watcher in watchers {
                    watcher.spoiled.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_spoils_only_the_watchers_of_its_keys() {
        let watches = Watches::default();
        let (a, b) = (Watcher::new(1), Watcher::new(2));
        watches.watch(b"x", &a);
        watches.watch(b"x", &a);
        watches.watch(b"y", &b);
        watches.touched([&b"y"[..], b"z"]);
        assert!(!a.spoiled() && b.spoiled());
        watches.unwatch([&b"x"[..]], &a);
        watches.touched([&b"x"[..]]);
        assert!(!a.spoiled());
        assert_eq!(watches.count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_flush_spoils_the_watchers_of_keys_that_existed() {
        let watches = Watches::default();
        let (a, b) = (Watcher::new(1), Watcher::new(2));
        watches.watch(b"there", &a);
        watches.watch(b"absent", &b);
        watches.flushed(|key| key == b"there");
        assert!(a.spoiled() && !b.spoiled());
    }
}
