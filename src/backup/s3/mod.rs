//! The backup store on an S3-compatible object store, so that followers run
//! on other machines than the master: [`S3Publisher`] is the master's end,
//! [`S3Reader`] a follower's (or a tool's), which cannot write by its type.
//!
//! RocksDB's BackupEngine writes only to a filesystem (its C API takes no
//! custom Env), so both ends keep a local directory in BackupEngine's
//! layout and the store mirrors it object for object, under the prefix:
//!
//! ```text
//! shared_checksum/<name>   SST files, shared by many backups; a name is never
//!                          reused for other content
//! private/<id>/<name>      the backup's own files (MANIFEST, CURRENT, OPTIONS)
//! meta/<id>                BackupEngine's meta file: the backup's file list,
//!                          sizes and crc32c checksums
//! latest                   rkv's commit point: the newest published backup
//!                          and the master's heartbeat, as JSON
//! log/<first>.seg          the live tail's segments (see `log.rs`), each
//!                          created once, named by its first sequence number
//! ```
//!
//! **The master** backs up into its staging directory as before, then
//! publishes: the shared files the store lacks, each created only if
//! absent; the private files and `meta/<id>`; and last `latest`, replaced
//! only if it is still the version this master last saw (`If-Match`). A
//! backup is visible only once `latest` names it, so a half-published one is
//! never seen, and a second master writing to the same prefix loses the
//! race on `latest` and is fenced. The heartbeat rewrites `latest` the same
//! way. LIST is used at start and by purges only.
//!
//! **A follower** reads `latest` with `If-None-Match`: one request, and no
//! LIST, per poll while nothing changes. On news it downloads `meta/<id>`
//! and the files its cache lacks, checks each against the meta file's size
//! and crc32c, writes `meta/<id>` into the cache last, and restores from the
//! cache as from any backup directory. The cache keeps one backup.

/// The [`BackupSource`] methods both ends answer alike: through their
/// [`Remote`], and their own `fetch` (which a reader follows by dropping
/// every other backup from its cache).
macro_rules! source_through_remote {
    () => {
        fn location(&self) -> $crate::backup::BackupLocation {
            self.remote.location()
        }

        fn newest_id(&self) -> Result<Option<u32>> {
            self.remote.newest_id()
        }

        fn describe(&self, id: u32) -> Result<BackupInfo> {
            self.fetch(id)?;
            self.remote.local.describe(id)
        }

        fn contains(&self, id: u32) -> Result<bool> {
            self.remote.contains(id)
        }

        fn files(&self, ids: &[u32]) -> Result<std::collections::BTreeMap<String, u64>> {
            self.remote.files(ids)
        }

        fn verify(&self, id: u32, meter: &crate::progress::Meter) -> Result<()> {
            self.fetch(id)?;
            self.remote.local.verify(id, meter)
        }

        fn find_damage(&self, id: u32) -> Result<Option<String>> {
            match self.fetch(id) {
                Err(e) => super::Remote::damage(e),
                Ok(()) => self.remote.local.find_damage(id),
            }
        }

        fn read_heartbeat(&self) -> Option<Heartbeat> {
            self.remote.read_heartbeat()
        }

        fn watch_paths(&self) -> Vec<std::path::PathBuf> {
            Vec::new()
        }

        fn traffic(&self) -> Option<crate::status::StoreTraffic> {
            Some(self.remote.traffic())
        }

        fn log(&self) -> Option<&dyn crate::tail::store::LogSource> {
            Some(self)
        }
    };
}

pub mod client;
mod counting;
#[cfg(test)]
pub mod cut;
mod log;
mod publisher;
mod reader;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use client::Fetched;
pub use client::{Bucket, S3Config};
pub use publisher::S3Publisher;
pub use reader::S3Reader;

use super::dir::{META_DIR, PRIVATE_DIR, SHARED_DIR};
use super::{meta, AppMetadata, BackupDir, BackupInfo, BackupLocation, Heartbeat};
use crate::error::{Error, Result, StoreFailure};

/// The commit point's object name.
pub const LATEST: &str = "latest";
/// Where the master probes the store's conditional writes.
const PROBE_DIR: &str = "rkv-probe";
/// How long one read of `latest` answers for: a poll reads the heartbeat and
/// the newest id, and pays one request for both.
const FRESH: Duration = Duration::from_millis(250);
/// The longest the master goes without listing the store in a purge.
const STORE_PURGE_PERIOD: Duration = Duration::from_secs(60);
/// Files transferred at once.
const PARALLEL: usize = 4;

/// The content of `latest`: the newest published backup and the master's
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    /// Format version; 1.
    pub v: u32,
    /// The newest backup, complete in the store; `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<LatestBackup>,
    /// The master's heartbeat (and lease); `None` when a tool published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
}

/// The backup `latest` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestBackup {
    /// Its id.
    pub id: u32,
    /// The sequence number it holds.
    pub seq: u64,
    /// When it was created, in unix milliseconds.
    pub created_ms: u64,
}

/// What both ends know of the store: the client, the local directory in
/// BackupEngine's layout (a reader's cache, the master's staging), and
/// `latest` as last read or written.
#[derive(Debug)]
struct Remote {
    bucket: Bucket,
    local: BackupDir,
    seen: Mutex<Seen>,
}

/// `latest` as last read or written.
#[derive(Debug, Default)]
struct Seen {
    /// Its content and ETag; `None` when the store has none.
    latest: Option<(Latest, String)>,
    /// When it was last read or written.
    fetched_at: Option<Instant>,
}

impl Remote {
    fn new(bucket: Bucket, local: BackupDir) -> Remote {
        Remote {
            bucket,
            local,
            seen: Mutex::default(),
        }
    }

    fn location(&self) -> BackupLocation {
        self.bucket.location()
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `latest` (with `If-None-Match`, so an unchanged one costs no
    /// transfer) unless it was read within [`FRESH`] and `force` is unset.
    fn refresh(&self, force: bool) -> Result<Option<Latest>> {
        let etag = {
            let seen = self.seen();
            if !force && seen.fetched_at.is_some_and(|t| t.elapsed() < FRESH) {
                return Ok(seen.latest.as_ref().map(|(l, _)| l.clone()));
            }
            seen.latest.as_ref().map(|(_, etag)| etag.clone())
        };
        let fetched = self.bucket.get_if_changed(LATEST, etag.as_deref())?;
        let mut seen = self.seen();
        seen.fetched_at = Some(Instant::now());
        match fetched {
            Fetched::Unchanged => {}
            Fetched::Missing => seen.latest = None,
            Fetched::Object(bytes, etag) => {
                let latest: Latest = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
                    location: self.bucket.location(),
                    context: format!("read {LATEST}, rkv's commit point"),
                    failure: StoreFailure::Unreadable,
                    source: Some(Box::new(e)),
                })?;
                seen.latest = Some((latest, etag));
            }
        }
        Ok(seen.latest.as_ref().map(|(l, _)| l.clone()))
    }

    /// The backup `latest` names, as last seen.
    fn published(&self) -> Option<u32> {
        let seen = self.seen();
        seen.latest.as_ref()?.0.backup.as_ref().map(|b| b.id)
    }

    /// Makes sure the local directory holds backup `id` whole: downloads its
    /// meta file and the files the directory lacks, checks each against the
    /// meta file's size and crc32c, and writes the meta file last. `true`
    /// when it downloaded, `false` when the directory held it already.
    fn fetch(&self, id: u32) -> Result<bool> {
        let meta_path = self.local.meta_path(id);
        if meta_path.is_file() {
            return Ok(false);
        }
        let meta_name = format!("{META_DIR}/{id}");
        let text = self
            .bucket
            .get(&meta_name)?
            .ok_or_else(|| Error::BackupNotFound {
                id,
                location: self.location(),
            })?;
        let parsed = std::str::from_utf8(&text)
            .map_err(|e| e.to_string())
            .and_then(|t| meta::parse(t).map_err(|e| e.to_string()))
            .map_err(|e| Error::BackupCorrupt {
                id,
                detail: format!("its meta file in the store: {e}"),
            })?;
        // The meta file comes from the network: every path it names must
        // stay inside the cache.
        if let Some(bad) = parsed.files.iter().find(|f| !inside_backup(&f.path)) {
            return Err(Error::BackupCorrupt {
                id,
                detail: format!(
                    "its meta file in the store names {:?}, which is not a backup file",
                    bad.path
                ),
            });
        }
        let root = self.local.path();
        let wanted: Vec<&meta::MetaFile> = parsed
            .files
            .iter()
            .filter(|f| !present(&root.join(&f.path), f.size))
            .collect();
        let requests: Vec<(String, PathBuf)> = wanted
            .iter()
            .map(|f| (f.path.clone(), root.join(&f.path)))
            .collect();
        // Files that arrived whole are kept even when another did not (the
        // store failed it, or this host's disk filled), so that a retry
        // downloads only what is still missing.
        let results = self.bucket.download(&requests, PARALLEL);
        let mut failure = None;
        for (file, result) in wanted.iter().zip(results) {
            let path = root.join(&file.path);
            let part = client::download_path(&path);
            let result = match result {
                Ok(result) => result,
                Err(e) => {
                    let _ = fs::remove_file(&part);
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let bad = match (result, file.size, file.crc32c) {
                (None, ..) => Some(format!(
                    "{} is missing from the store (purged, or deleted by hand)",
                    file.path
                )),
                (Some((size, _)), Some(want), _) if want != size => Some(format!(
                    "{} as downloaded: {size} bytes, where the meta file records {want}",
                    file.path
                )),
                (Some((_, crc)), _, Some(want)) if want != crc => Some(format!(
                    "{} as downloaded: crc32c {crc}, where the meta file records {want}",
                    file.path
                )),
                _ => None,
            };
            match bad {
                Some(detail) => {
                    let _ = fs::remove_file(&part);
                    failure.get_or_insert(Error::BackupCorrupt { id, detail });
                }
                None => fs::rename(&part, &path)
                    .map_err(|e| Error::io(format!("rename {}", part.display()), e))?,
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        write_durably(&meta_path, &text)?;
        Ok(true)
    }

    /// Empties the local directory (but for the master's lock file).
    fn clear_local(&self) -> Result<()> {
        for dir in [META_DIR, PRIVATE_DIR, SHARED_DIR] {
            let path = self.local.path().join(dir);
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// The backups in the store, read from their meta files: one LIST, and
    /// one GET per backup.
    fn list_store(&self) -> Result<Vec<BackupInfo>> {
        let listed = self.bucket.list(None)?;
        let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
        let ids: BTreeSet<u32> = listed
            .iter()
            .filter_map(|o| backup_of(&o.name, META_DIR))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(text) = self.bucket.get(&format!("{META_DIR}/{id}"))? else {
                continue;
            };
            let Ok(parsed) = meta::parse(&String::from_utf8_lossy(&text)) else {
                continue;
            };
            // Complete: every file it lists is there, with its size.
            let complete = parsed.files.iter().all(|f| {
                sizes
                    .get(f.path.as_str())
                    .is_some_and(|&size| f.size.is_none_or(|want| want == size))
            });
            if complete {
                out.push(BackupInfo {
                    id,
                    timestamp: parsed.timestamp,
                    size: parsed.files.iter().map(|f| sizes[f.path.as_str()]).sum(),
                    files: parsed.files.len() as u32,
                    metadata: AppMetadata::parse(&parsed.app_metadata),
                });
            }
        }
        Ok(out)
    }

    fn newest_id(&self) -> Result<Option<u32>> {
        match self.refresh(false)? {
            Some(latest) => Ok(latest.backup.map(|b| b.id)),
            None => Err(Error::BackupDirMissing {
                location: self.location(),
            }),
        }
    }

    fn contains(&self, id: u32) -> Result<bool> {
        self.bucket.exists(&format!("{META_DIR}/{id}"))
    }

    /// The files backups `ids` list, with their sizes in the store: one
    /// LIST, and one GET per meta file.
    fn files(&self, ids: &[u32]) -> Result<BTreeMap<String, u64>> {
        let listed = self.bucket.list(None)?;
        let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
        let mut files = BTreeMap::new();
        for &id in ids {
            let name = format!("{META_DIR}/{id}");
            let text = self
                .bucket
                .get(&name)?
                .ok_or_else(|| Error::BackupNotFound {
                    id,
                    location: self.location(),
                })?;
            let parsed =
                meta::parse(&String::from_utf8_lossy(&text)).map_err(|e| Error::BackupCorrupt {
                    id,
                    detail: format!("{name}: {e}"),
                })?;
            for f in parsed.files {
                let size = sizes.get(f.path.as_str()).copied().or(f.size).unwrap_or(0);
                files.insert(f.path, size);
            }
        }
        Ok(files)
    }

    /// What a failed [`Remote::fetch`] says of the backup: the damage, or
    /// the error when it says nothing of the backup (the store could not be
    /// read, the local disk failed).
    fn damage(e: Error) -> Result<Option<String>> {
        match e {
            Error::BackupCorrupt { .. } | Error::BackupNotFound { .. } => Ok(Some(e.to_string())),
            other => Err(other),
        }
    }

    /// The backup to restore: `id`, or the newest.
    fn restore_id(&self, id: Option<u32>) -> Result<u32> {
        match id {
            Some(id) => Ok(id),
            None => self.newest_id()?.ok_or_else(|| Error::NoBackups {
                location: self.location(),
            }),
        }
    }

    fn read_heartbeat(&self) -> Option<Heartbeat> {
        self.refresh(false).ok().flatten()?.heartbeat
    }

    fn traffic(&self) -> crate::status::StoreTraffic {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.bucket.counts;
        crate::status::StoreTraffic {
            gets: c.get.load(Relaxed),
            puts: c.put.load(Relaxed),
            lists: c.list.load(Relaxed),
            deletes: c.delete.load(Relaxed),
            failed: c.failed.load(Relaxed),
            since_answer: c.since_answer(),
            bytes_up: c.bytes_up.load(Relaxed),
            bytes_down: c.bytes_down.load(Relaxed),
        }
    }
}

/// The backup an object belongs to under `dir` (`meta/3` or `private/3/…`
/// → 3 for `meta` or `private`).
fn backup_of(name: &str, dir: &str) -> Option<u32> {
    let rest = name.strip_prefix(dir)?.strip_prefix('/')?;
    rest.split('/').next()?.parse().ok()
}

/// Whether `path`, from a meta file, names a file of a backup directory:
/// relative, under `shared_checksum/`, `shared/` or `private/`, with no
/// `..`, `.` or empty part.
fn inside_backup(path: &str) -> bool {
    let mut parts = path.split('/');
    let top = parts.next().unwrap_or_default();
    matches!(top, SHARED_DIR | "shared" | PRIVATE_DIR)
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && path.split('/').count() >= 2
}

/// Whether `path` is there with size `size` (when known).
fn present(path: &Path, size: Option<u64>) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && size.is_none_or(|s| s == m.len()))
}

/// Writes `path` so that it appears whole or not at all, and survives a
/// crash once this returns.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let part = client::download_path(path);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = fs::File::create(&part)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&part, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests;
