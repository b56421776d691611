//! [`S3Store`]: the backup store on an S3-compatible object store, so that
//! followers run on other machines than the master.
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

pub mod client;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use client::{Bucket, S3Config};
use client::{Fetched, Mode, Put};

use super::dir::{META_DIR, PRIVATE_DIR, SHARED_DIR};
use super::{
    meta, AppMetadata, BackupDir, BackupInfo, BackupSink, BackupSource, CreateStats, Damage,
    Heartbeat, RestoreMode, RestoreStats, Retention, ScrubCursor,
};
use crate::db::Db;
use crate::error::{Error, Result};

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

/// Which end of the replication a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Publishes from its staging directory.
    Master,
    /// Downloads into its cache, which keeps one backup.
    Reader,
}

/// What a store knows of the remote side between calls.
#[derive(Debug, Default)]
struct State {
    /// `latest` as last read or written, with its ETag.
    latest: Option<(Latest, String)>,
    /// When `latest` was last read or written.
    fetched_at: Option<Instant>,
    /// Master: the last heartbeat this master wrote, which each publish
    /// carries (never another master's, read from the store).
    heartbeat: Option<Heartbeat>,
    /// Master: set once this master lost the race on `latest`.
    fenced_by: Option<String>,
    /// Master: the shared files the store holds.
    known_shared: HashSet<String>,
    /// Master: when a purge last looked at the store.
    store_purged_at: Option<Instant>,
}

/// The backup store on an S3-compatible object store (see the module docs).
#[derive(Debug)]
pub struct S3Store {
    bucket: Bucket,
    /// The master's staging directory, or a reader's cache.
    local: BackupDir,
    role: Role,
    state: Mutex<State>,
    /// One publish at a time (the backup loop and the heartbeat both publish).
    publishing: Mutex<()>,
    /// The master's lock on its staging directory.
    _lock: Option<fs::File>,
}

impl S3Store {
    /// A follower's (or a tool's) view of the store, downloading into
    /// `cache`. Nothing is sent yet.
    pub fn reader(config: S3Config, cache: BackupDir) -> Result<S3Store> {
        Ok(S3Store::reader_on(Bucket::new(config)?, cache))
    }

    /// [`S3Store::reader`] on a given client (an in-memory store, in tests).
    pub fn reader_on(bucket: Bucket, cache: BackupDir) -> S3Store {
        S3Store {
            bucket,
            local: cache,
            role: Role::Reader,
            state: Mutex::default(),
            publishing: Mutex::new(()),
            _lock: None,
        }
    }

    /// The master's store, staging backups in `staging`: locks the staging
    /// directory, checks that the store honours conditional writes (the
    /// fence) unless `accept_unfenced`, lists what the store holds, and
    /// brings the staging directory to the store's newest backup so that
    /// new backups continue its ids and share its files.
    pub fn master(config: S3Config, staging: BackupDir, accept_unfenced: bool) -> Result<S3Store> {
        S3Store::master_on(Bucket::new(config)?, staging, accept_unfenced)
    }

    /// [`S3Store::master`] on a given client (an in-memory store, in tests).
    pub fn master_on(bucket: Bucket, staging: BackupDir, accept_unfenced: bool) -> Result<S3Store> {
        fs::create_dir_all(staging.path())
            .map_err(|e| Error::io(format!("create {}", staging.path().display()), e))?;
        let lock = staging.lock_for_master()?;
        let store = S3Store {
            bucket,
            local: staging,
            role: Role::Master,
            state: Mutex::default(),
            publishing: Mutex::new(()),
            _lock: lock,
        };
        if let Err(behaviour) = store.probe_conditional_writes()? {
            if !accept_unfenced {
                return Err(Error::StoreNotConditional {
                    location: store.location(),
                    behaviour,
                });
            }
            tracing::warn!(
                "{}: {behaviour}; continuing as --accept-unfenced-store says: a second master \
                 on this prefix is not fenced off",
                store.location()
            );
        }
        let listed = store.bucket.list(None)?;
        store.state().known_shared = listed
            .iter()
            .filter(|o| o.name.starts_with(SHARED_DIR))
            .map(|o| o.name.clone())
            .collect();
        store.refresh(true)?;
        store.align_staging()?;
        Ok(store)
    }

    /// The object store client (its request counts, for the benchmark).
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a probe object twice and replaces it with a wrong ETag: a
    /// store that honours `If-None-Match` and `If-Match` refuses the last
    /// two. `Ok(Err(behaviour))` names what the store did instead.
    fn probe_conditional_writes(&self) -> Result<std::result::Result<(), String>> {
        let name = format!("{PROBE_DIR}/{}-{}", std::process::id(), super::now_ms());
        let body = || Bytes::from_static(b"rkv probe");
        let mut first = self.bucket.put(&name, body(), Mode::Create)?;
        // The name is this run's alone: refused, the client's retry of a
        // write whose reply was lost found its own object there.
        if first == Put::Refused && self.bucket.get(&name)?.is_some_and(|b| b == body()) {
            first = Put::Written(String::new());
        }
        let second = self.bucket.put(&name, body(), Mode::Create)?;
        let wrong = self
            .bucket
            .put(&name, body(), Mode::Replace("\"0-not-an-etag\"".into()))?;
        self.bucket.delete(&name)?;
        Ok(match (first, second, wrong) {
            (Put::Written(_), Put::Refused, Put::Refused) => Ok(()),
            (_, Put::Written(_), _) => Err(
                "the store ignores If-None-Match: it overwrote an object a create-if-absent \
                 write named"
                    .to_string(),
            ),
            (_, _, Put::Written(_)) => Err(
                "the store ignores If-Match: it replaced an object whose ETag did not match"
                    .to_string(),
            ),
            (Put::Refused, ..) => Err("the store refused to create a new object".to_string()),
        })
    }

    /// Reads `latest` (with `If-None-Match`, so an unchanged one costs no
    /// transfer) unless it was read within [`FRESH`] and `force` is unset.
    fn refresh(&self, force: bool) -> Result<Option<Latest>> {
        let etag = {
            let state = self.state();
            if !force && state.fetched_at.is_some_and(|t| t.elapsed() < FRESH) {
                return Ok(state.latest.as_ref().map(|(l, _)| l.clone()));
            }
            state.latest.as_ref().map(|(_, etag)| etag.clone())
        };
        let fetched = self.bucket.get_if_changed(LATEST, etag.as_deref())?;
        let mut state = self.state();
        state.fetched_at = Some(Instant::now());
        match fetched {
            Fetched::Unchanged => {}
            Fetched::Missing => state.latest = None,
            Fetched::Object(bytes, etag) => {
                let latest: Latest = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
                    location: self.bucket.url(),
                    context: format!("read {LATEST}"),
                    detail: format!("it is not rkv's commit point: {e}"),
                })?;
                state.latest = Some((latest, etag));
            }
        }
        Ok(state.latest.as_ref().map(|(l, _)| l.clone()))
    }

    /// Makes sure the local directory holds backup `id` whole: downloads its
    /// meta file and the files the directory lacks, checks each against the
    /// meta file's size and crc32c, and writes the meta file last. A reader
    /// then drops every other backup from its cache.
    fn fetch(&self, id: u32) -> Result<()> {
        let meta_path = self.local.meta_path(id);
        if meta_path.is_file() {
            return Ok(());
        }
        let meta_name = format!("{META_DIR}/{id}");
        let text = self
            .bucket
            .get(&meta_name)?
            .ok_or_else(|| Error::BackupNotFound {
                id,
                path: self.location().into(),
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
        if self.role == Role::Reader {
            self.keep_only(id);
        }
        Ok(())
    }

    /// Drops every backup but `id` from the local directory, and the files
    /// only they used.
    fn keep_only(&self, id: u32) {
        let root = self.local.path();
        let Ok(kept) = self.local.read_meta(id) else {
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

    /// Master, at start: brings the staging directory to the store's
    /// newest backup, unless it already holds it (a restart).
    fn align_staging(&self) -> Result<()> {
        let Some(newest) = self.published() else {
            return Ok(());
        };
        let staged = fs::read(self.local.meta_path(newest)).ok();
        if staged.is_some()
            && staged
                == self
                    .bucket
                    .get(&format!("{META_DIR}/{newest}"))?
                    .map(|b| b.to_vec())
        {
            return Ok(());
        }
        tracing::info!(
            backup_id = newest,
            "the staging directory {} does not hold the store's newest backup: downloading it",
            self.local.path().display()
        );
        self.clear_local()?;
        self.fetch(newest)
    }

    /// The backup `latest` names, as last seen.
    fn published(&self) -> Option<u32> {
        let state = self.state();
        state.latest.as_ref()?.0.backup.as_ref().map(|b| b.id)
    }

    /// Replaces `latest` with `next`, only if it is still the version this
    /// store last saw; when another writer replaced it, this master is
    /// fenced from now on.
    ///
    /// A refused condition is not yet another writer: when the store
    /// applied this very write and its reply was lost, the client's retry
    /// (or this master's next write, after an error whose outcome was
    /// unknown) finds this master's own version. So what the store holds is
    /// read back first: this write, landed, is a success; an earlier write
    /// of this same run (its token) is written against once more; only
    /// another writer's version fences. A failed read back is an error to
    /// try again later, never a fence.
    fn commit(&self, next: Latest) -> Result<()> {
        let token = |l: &Latest| l.heartbeat.as_ref().and_then(|h| h.token.clone());
        let ours = token(&next);
        for _ in 0..2 {
            let etag = self.state().latest.as_ref().map(|(_, etag)| etag.clone());
            let body = serde_json::to_vec(&next).expect("Latest serializes");
            let mode = match etag {
                Some(etag) => Mode::Replace(etag),
                None => Mode::Create,
            };
            match self.bucket.put(LATEST, Bytes::from(body), mode)? {
                Put::Written(etag) => {
                    let mut state = self.state();
                    state.latest = Some((next, etag));
                    state.fetched_at = Some(Instant::now());
                    return Ok(());
                }
                Put::Refused => {
                    // Read again (with its new ETag), so that a caller that
                    // tries again writes against the version now there.
                    let seen = self.refresh(true)?;
                    if seen.as_ref() == Some(&next) {
                        tracing::info!(
                            "{LATEST} in {} already holds this write: its reply was lost",
                            self.location()
                        );
                        return Ok(());
                    }
                    if ours.is_some() && seen.as_ref().and_then(token) == ours {
                        // This run's own earlier write, which landed
                        // although its reply said otherwise: once more.
                        continue;
                    }
                    let by = seen
                        .and_then(|l| l.heartbeat)
                        .map(|h| h.owner())
                        .unwrap_or_else(|| "another writer".to_string());
                    return Err(self.fenced(by));
                }
            }
        }
        Err(Error::Store {
            location: self.bucket.url(),
            context: format!("write {LATEST}"),
            detail: "it changed between this master's own writes; will try again".into(),
        })
    }

    /// Records that another writer replaced `latest`: a master stops
    /// publishing from now on.
    fn fenced(&self, by: String) -> Error {
        if self.role == Role::Master {
            tracing::error!(
                other = %by,
                "{LATEST} in {} changed behind this master: another master writes there. \
                 This master stops publishing",
                self.location()
            );
            self.state().fenced_by = Some(by.clone());
        }
        Error::Fenced { by }
    }

    fn check_fenced(&self) -> Result<()> {
        match &self.state().fenced_by {
            Some(by) => Err(Error::Fenced { by: by.clone() }),
            None => Ok(()),
        }
    }

    /// Publishes the staging directory's newest backup if `latest` does not
    /// name it yet; returns the bytes uploaded, or `None` when there was
    /// nothing to publish.
    fn publish(&self) -> Result<Option<u64>> {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.check_fenced()?;
        let Some(id) = self.local.newest_id().ok().flatten() else {
            return Ok(None);
        };
        if self.published() == Some(id) {
            return Ok(None);
        }
        let meta_path = self.local.meta_path(id);
        let meta_bytes = fs::read(&meta_path)
            .map_err(|e| Error::io(format!("read {}", meta_path.display()), e))?;
        let parsed = meta::parse(&String::from_utf8_lossy(&meta_bytes)).map_err(|e| {
            Error::BackupCorrupt {
                id,
                detail: format!("meta file {}: {e}", meta_path.display()),
            }
        })?;
        let root = self.local.path();
        let known = self.state().known_shared.clone();
        // The meta file goes up beside the files it lists, not after them:
        // a backup whose files are not all there is incomplete to a reader
        // (see `list_store`), and followers go by `latest`, written last.
        let meta_name = format!("{META_DIR}/{id}");
        let meta_upload = (meta_name, meta_path.clone(), false);
        let files: Vec<(String, PathBuf, bool)> = parsed
            .files
            .iter()
            .filter(|f| !known.contains(&f.path))
            .map(|f| {
                (
                    f.path.clone(),
                    root.join(&f.path),
                    f.path.starts_with(SHARED_DIR),
                )
            })
            .chain(std::iter::once(meta_upload))
            .collect();
        let uploaded = self.bucket.upload(&files, PARALLEL)?;
        self.state()
            .known_shared
            .extend(files.iter().filter(|f| f.2).map(|f| f.0.clone()));
        let app = AppMetadata::parse(&parsed.app_metadata);
        let heartbeat = self.state().heartbeat.clone();
        self.commit(Latest {
            v: 1,
            backup: Some(LatestBackup {
                id,
                seq: app.as_ref().map_or(parsed.sequence, |m| m.seq),
                created_ms: app
                    .as_ref()
                    .map_or(parsed.timestamp * 1000, |m| m.created_ms),
            }),
            heartbeat,
        })?;
        Ok(Some(uploaded))
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

    /// After a local purge: deletes from the store the backups staging no
    /// longer keeps (meta file first, then private files), and the shared
    /// files no kept backup lists that are older than `grace`; and uploads
    /// again any file a kept backup lists that the store lost.
    fn purge_store(&self, grace: Duration, now: SystemTime) -> Result<()> {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let listed = self.bucket.list(None)?;
        let kept: Vec<BackupInfo> = self.local.list()?;
        let published = self.published();
        let kept_ids: HashSet<u32> = kept.iter().map(|b| b.id).chain(published).collect();
        let oldest_kept = kept_ids.iter().min().copied().unwrap_or(0);
        let mut needed: HashSet<String> = HashSet::new();
        let mut kept_files: Vec<(String, PathBuf)> = Vec::new();
        for &id in &kept_ids {
            if let Ok(parsed) = self.local.read_meta(id) {
                for f in parsed.files {
                    if published.is_some_and(|p| id <= p) {
                        kept_files.push((f.path.clone(), self.local.path().join(&f.path)));
                    }
                    needed.insert(f.path);
                }
            }
        }
        // Backups older than the oldest kept, by their meta files, and the
        // private files of publishes that failed before their meta file.
        let stale_ids: BTreeSet<u32> = listed
            .iter()
            .filter_map(|o| {
                backup_of(&o.name, META_DIR).or_else(|| backup_of(&o.name, PRIVATE_DIR))
            })
            .filter(|id| !kept_ids.contains(id) && *id < oldest_kept.max(1))
            .collect();
        // In batches: the meta files first, so no reader takes a backup
        // for complete while its files go.
        let metas: Vec<String> = stale_ids
            .iter()
            .map(|id| format!("{META_DIR}/{id}"))
            .collect();
        self.bucket.delete_many(&metas)?;
        let in_store: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        let unused: Vec<String> = listed
            .iter()
            .filter(|object| {
                let private_of = backup_of(&object.name, PRIVATE_DIR);
                let unused_shared = object.name.starts_with(SHARED_DIR)
                    && !needed.contains(&object.name)
                    && now.duration_since(object.modified).unwrap_or_default() > grace;
                private_of.is_some_and(|id| stale_ids.contains(&id)) || unused_shared
            })
            .map(|object| object.name.clone())
            .collect();
        self.bucket.delete_many(&unused)?;
        let lost: Vec<(String, PathBuf, bool)> = kept_files
            .into_iter()
            .filter(|(name, _)| !in_store.contains(name.as_str()))
            .map(|(name, path)| (name, path, true))
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                files = lost.len(),
                "the store lost files of retained backups: uploading them again"
            );
            self.bucket.upload(&lost, PARALLEL)?;
        }
        let mut state = self.state();
        state.known_shared = listed
            .iter()
            .filter(|o| o.name.starts_with(SHARED_DIR) && needed.contains(&o.name))
            .map(|o| o.name.clone())
            .chain(lost.into_iter().map(|f| f.0))
            .collect();
        state.store_purged_at = Some(Instant::now());
        Ok(())
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

impl BackupSource for S3Store {
    fn location(&self) -> String {
        self.bucket.url()
    }

    fn list(&self) -> Result<Vec<BackupInfo>> {
        match self.role {
            // The master's staging directory is what it published (and at
            // most one backup it is still publishing).
            Role::Master => self.local.list(),
            Role::Reader => self.list_store(),
        }
    }

    fn newest_id(&self) -> Result<Option<u32>> {
        match self.refresh(false)? {
            Some(latest) => Ok(latest.backup.map(|b| b.id)),
            None => Err(Error::BackupDirMissing {
                path: self.location().into(),
            }),
        }
    }

    fn describe(&self, id: u32) -> Result<BackupInfo> {
        self.fetch(id)?;
        self.local.describe(id)
    }

    fn contains(&self, id: u32) -> bool {
        self.bucket
            .exists(&format!("{META_DIR}/{id}"))
            .unwrap_or(true)
    }

    fn verify(&self, id: u32, meter: &crate::progress::Meter) -> Result<()> {
        self.fetch(id)?;
        self.local.verify(id, meter)
    }

    fn files(&self, ids: &[u32]) -> Result<std::collections::BTreeMap<String, u64>> {
        // One LIST for the sizes, one GET per meta file.
        let listed = self.bucket.list(None)?;
        let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
        let mut files = std::collections::BTreeMap::new();
        for &id in ids {
            let name = format!("{META_DIR}/{id}");
            let text = self
                .bucket
                .get(&name)?
                .ok_or_else(|| Error::BackupNotFound {
                    id,
                    path: self.location().into(),
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

    fn find_damage(&self, id: u32) -> Option<String> {
        match self.fetch(id) {
            Err(e) => Some(e.to_string()),
            Ok(()) => self.local.find_damage(id),
        }
    }

    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
        let id = match id {
            Some(id) => id,
            None => self.newest_id()?.ok_or_else(|| Error::NoBackups {
                path: self.location().into(),
            })?,
        };
        self.fetch(id)?;
        let result = self.local.restore(Some(id), dest, mode);
        if let Err(Error::BackupCorrupt { .. }) = &result {
            // The cache, not the store, may be what is damaged: download
            // again next time.
            let _ = fs::remove_file(self.local.meta_path(id));
            if self.role == Role::Reader {
                let _ = self.clear_local();
            }
        }
        result
    }

    fn read_heartbeat(&self) -> Option<Heartbeat> {
        self.refresh(false).ok().flatten()?.heartbeat
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn traffic(&self) -> Option<crate::status::StoreTraffic> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.bucket.counts;
        Some(crate::status::StoreTraffic {
            gets: c.get.load(Relaxed),
            puts: c.put.load(Relaxed),
            lists: c.list.load(Relaxed),
            deletes: c.delete.load(Relaxed),
            failed: c.failed.load(Relaxed),
            since_answer: c.since_answer(),
            bytes_up: c.bytes_up.load(Relaxed),
            bytes_down: c.bytes_down.load(Relaxed),
        })
    }
}

impl BackupSink for S3Store {
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        self.check_fenced()?;
        let mut stats = self.local.create(db, master)?;
        let started = Instant::now();
        stats.bytes_copied = self.publish()?.unwrap_or(0);
        stats.duration += started.elapsed();
        Ok(stats)
    }

    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>> {
        let purged = self.local.purge(retention, now)?;
        // The store is listed when backups were purged, and at least every
        // STORE_PURGE_PERIOD (or --keep-within, if shorter), which also
        // uploads again whatever the store lost.
        let due = self
            .state()
            .store_purged_at
            .is_none_or(|t| t.elapsed() >= retention.keep_within.min(STORE_PURGE_PERIOD));
        if !purged.is_empty() || due {
            self.purge_store(retention.keep_within, now)?;
        }
        Ok(purged)
    }

    fn write_heartbeat(&self, heartbeat: &Heartbeat) -> Result<()> {
        self.state().heartbeat = Some(heartbeat.clone());
        // A backup whose publish failed is published with the heartbeat,
        // which its `latest` carries.
        if self.publish()?.is_some() {
            return Ok(());
        }
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.check_fenced()?;
        let backup = self
            .state()
            .latest
            .as_ref()
            .and_then(|(l, _)| l.backup.clone());
        self.commit(Latest {
            v: 1,
            backup,
            heartbeat: Some(heartbeat.clone()),
        })
    }

    fn lock_for_master(&self) -> Result<Option<fs::File>> {
        // The staging directory is locked from the start; across hosts the
        // conditional write of `latest` fences.
        Ok(None)
    }

    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        self.local.scrub(cursor, budget)
    }

    fn remove_damaged(&self, damage: &[Damage]) -> Result<()> {
        self.local.remove_damaged(damage)?;
        let mut state = self.state();
        for d in damage {
            state.known_shared.remove(&d.path);
        }
        Ok(())
    }

    fn drop_incomplete(&self) -> Result<Vec<u32>> {
        self.local.drop_incomplete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_file_cannot_name_a_path_outside_the_backup() {
        assert!(inside_backup("shared_checksum/000009_sABC_123.sst"));
        assert!(inside_backup("private/3/MANIFEST-000005"));
        assert!(!inside_backup("../../etc/passwd"));
        assert!(!inside_backup("/etc/passwd"));
        assert!(!inside_backup("shared_checksum/../../x"));
        assert!(!inside_backup("private/3//x"));
        assert!(!inside_backup("meta/3"));
        assert!(!inside_backup("shared_checksum"));
    }

    #[test]
    fn objects_name_their_backup() {
        assert_eq!(backup_of("meta/12", META_DIR), Some(12));
        assert_eq!(
            backup_of("private/12/MANIFEST-000005", PRIVATE_DIR),
            Some(12)
        );
        assert_eq!(backup_of("private/12/x", META_DIR), None);
        assert_eq!(backup_of("metadata/1", META_DIR), None);
        assert_eq!(backup_of("meta/.1.tmp", META_DIR), None);
    }

    #[test]
    fn latest_round_trips_and_a_tool_may_omit_the_heartbeat() {
        let latest = Latest {
            v: 1,
            backup: Some(LatestBackup {
                id: 7,
                seq: 42,
                created_ms: 1_700_000_000_000,
            }),
            heartbeat: None,
        };
        let json = serde_json::to_string(&latest).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"backup":{"id":7,"seq":42,"created_ms":1700000000000}}"#
        );
        assert_eq!(serde_json::from_str::<Latest>(&json).unwrap(), latest);
    }
}
