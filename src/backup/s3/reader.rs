//! [`S3Reader`]: a follower's (or a tool's) view of the object store. It
//! reads `latest`, downloads a backup into its cache and restores from
//! there; it has no method that writes to the store.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Bucket, Remote, S3Config, META_DIR, PRIVATE_DIR, SHARED_DIR};
use crate::backup::{BackupDir, BackupInfo, BackupSource, Heartbeat, RestoreMode, RestoreStats};
use crate::error::{Error, Result};

/// The object store as a follower reads it, through a cache that keeps one
/// backup (see the module docs of [`super`]).
#[derive(Debug)]
pub struct S3Reader {
    pub(super) remote: Remote,
}

impl S3Reader {
    /// A reader of the store `config` names, downloading into `cache`.
    /// Nothing is sent yet.
    pub fn new(config: S3Config, cache: BackupDir) -> Result<S3Reader> {
        Ok(S3Reader::on(Bucket::new(config)?, cache))
    }

    /// [`S3Reader::new`] on a given client (an in-memory store, in tests).
    pub fn on(bucket: Bucket, cache: BackupDir) -> S3Reader {
        S3Reader {
            remote: Remote::new(bucket, cache),
        }
    }

    /// Brings backup `id` into the cache, and then drops every other
    /// backup from it.
    fn fetch(&self, id: u32) -> Result<()> {
        if self.remote.fetch(id)? {
            self.keep_only(id);
        }
        Ok(())
    }

    /// Drops every backup but `id` from the cache, and the files only they
    /// used.
    fn keep_only(&self, id: u32) {
        let local = &self.remote.local;
        let root = local.path();
        let Ok(kept) = local.read_meta(id) else {
            return;
        };
        let needed: HashSet<PathBuf> = kept.files.iter().map(|f| root.join(&f.path)).collect();
        for dir in [META_DIR, PRIVATE_DIR] {
            for entry in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
                if entry.file_name().to_str() != Some(&id.to_string()) {
                    let path = entry.path();
                    let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
                }
            }
        }
        for entry in fs::read_dir(root.join(SHARED_DIR))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !needed.contains(&entry.path()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl BackupSource for S3Reader {
    source_through_remote!();

    fn list(&self) -> Result<Vec<BackupInfo>> {
        self.remote.list_store()
    }

    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
        let id = self.remote.restore_id(id)?;
        self.fetch(id)?;
        let result = self.remote.local.restore(Some(id), dest, mode);
        if let Err(Error::BackupCorrupt { .. }) = &result {
            // The cache, not the store, may be what is damaged: download
            // again next time.
            let _ = self.remote.clear_local();
        }
        result
    }
}
