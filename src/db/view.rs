//! A view of the database as of one moment, for a command that reads
//! several keys (or one key in both column families): every read through
//! it sees the same writes, whatever is written meanwhile. On a follower
//! the log is applied while clients read, so without it an `MGET` could
//! show half of a transaction.

use rocksdb::{ColumnFamily, Snapshot};

use super::{Db, Entry};
use crate::error::{Error, Result};

/// The database as of the moment [`Db::view`] was called.
pub struct View<'a> {
    db: &'a Db,
    snapshot: Snapshot<'a>,
}

impl Db {
    /// A view of the database as it is now (a RocksDB snapshot, released
    /// when the view is dropped).
    pub fn view(&self) -> View<'_> {
        View {
            db: self,
            snapshot: self.inner.snapshot(),
        }
    }
}

impl View<'_> {
    /// [`Db::entry`], as of the view's moment.
    pub fn entry(&self, key: &[u8], now: u64) -> Result<Option<Entry>> {
        let read = |cf: Option<&ColumnFamily>| {
            match cf {
                None => self.snapshot.get(key),
                Some(cf) => self.snapshot.get_cf(cf, key),
            }
            .map_err(|e| Error::rocksdb("read a key", e))
        };
        if let Some(value) = read(None)? {
            return Ok(Some(Entry {
                value,
                expires_at: None,
            }));
        }
        let Some(cf) = self.db.expiring_if_used() else {
            return Ok(None);
        };
        Ok(read(Some(cf))?.and_then(|stored| Entry::decode_expiring(stored, now)))
    }
}
