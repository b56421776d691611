//! The entries the master's writes wrote or read last, kept under the
//! write lock, so the next read-modify-write of the same key (an `INCR` of
//! a counter, a `SET … GET`) finds it here instead of searching the
//! memtable's skiplist, which holds every earlier version of a hot key as
//! an entry of its own (that search was a third of the master's time under
//! pipelined `INCR`s). Every write of the master holds the lock and keeps
//! these entries true: a transaction's commit records what it wrote, a
//! group of plain `SET`s forgets its keys, `FLUSHDB` and a failed write
//! forget everything. Bounded by bytes: past the budget, it starts over.

use std::collections::HashMap;

use super::Entry;

/// Recently written or read entries, by key (`None`: absent).
#[derive(Default)]
pub struct Recent {
    entries: HashMap<Vec<u8>, Option<Entry>>,
    bytes: usize,
}

impl Recent {
    /// The most bytes of keys and values kept.
    const BUDGET: usize = 16 << 20;
    /// What an entry costs beyond its key and value (the map's slot, the
    /// vectors' headers).
    const OVERHEAD: usize = 80;

    /// The entry of `key` as the database holds it, if known.
    pub fn get(&self, key: &[u8]) -> Option<&Option<Entry>> {
        self.entries.get(key)
    }

    /// Records that the database holds `entry` for `key`.
    pub fn note(&mut self, key: Vec<u8>, entry: Option<Entry>) {
        self.forget(&key);
        let added = cost(&key, &entry);
        if added > Self::BUDGET / 16 {
            // A large value: not worth the room.
            return;
        }
        if self.bytes + added > Self::BUDGET {
            self.forget_all();
        }
        self.bytes += added;
        self.entries.insert(key, entry);
    }

    /// Forgets `key` (written without its new entry at hand).
    pub fn forget(&mut self, key: &[u8]) {
        if let Some((key, old)) = self.entries.remove_entry(key) {
            self.bytes -= cost(&key, &old);
        }
    }

    /// Forgets every entry (`FLUSHDB`, or a write whose outcome is unknown).
    pub fn forget_all(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// What an entry of `key` holding `entry` counts against the budget.
fn cost(key: &[u8], entry: &Option<Entry>) -> usize {
    key.len() + entry.as_ref().map_or(0, |e| e.value.len()) + Recent::OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8]) -> Option<Entry> {
        Some(Entry {
            value: value.to_vec(),
            expires_at: None,
        })
    }

    #[test]
    fn keeps_the_newest_entry_of_a_key_and_its_bytes() {
        let mut recent = Recent::default();
        recent.note(b"k".to_vec(), entry(b"1"));
        recent.note(b"k".to_vec(), entry(b"22"));
        recent.note(b"gone".to_vec(), None);
        assert_eq!(recent.get(b"k"), Some(&entry(b"22")));
        assert_eq!(recent.get(b"gone"), Some(&None));
        assert_eq!(recent.get(b"other"), None);
        assert_eq!(recent.bytes, 1 + 2 + 4 + 2 * Recent::OVERHEAD);
        recent.forget(b"k");
        assert_eq!(recent.get(b"k"), None);
        assert_eq!(recent.bytes, 4 + Recent::OVERHEAD);
    }

    #[test]
    fn stays_within_its_budget() {
        let mut recent = Recent::default();
        let value = vec![b'v'; 1000];
        for i in 0..100_000u32 {
            recent.note(i.to_be_bytes().to_vec(), entry(&value));
            assert!(recent.bytes <= Recent::BUDGET);
        }
        // The newest is always kept; a value past a sixteenth of the
        // budget is not, and its stale entry goes.
        assert!(recent.get(&99_999u32.to_be_bytes()).is_some());
        recent.note(b"big".to_vec(), entry(b"small"));
        recent.note(b"big".to_vec(), entry(&vec![0; Recent::BUDGET / 8]));
        assert_eq!(recent.get(b"big"), None);
    }
}
