//! [`S3Publisher`]: the master's end of the object store. It backs up into
//! a staging directory, publishes each backup (the files the store lacks,
//! then `latest`, conditionally), purges, and renews the heartbeat in
//! `latest`; a refused conditional write fences it.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::client::{Mode, Put, Upload};
use super::{
    backup_of, Bucket, Latest, LatestBackup, Remote, S3Config, LATEST, META_DIR, PARALLEL,
    PRIVATE_DIR, PROBE_DIR, SHARED_DIR, STORE_PURGE_PERIOD,
};
use crate::backup::{
    meta, AppMetadata, BackupDir, BackupInfo, BackupSink, BackupSource, CreateStats, Damage, Fence,
    Heartbeat, MasterLock, RestoreMode, RestoreStats, Retention, ScrubCursor,
};
use crate::db::Db;
use crate::error::{Error, Result, StoreFailure};

/// What the master knows of its own publishing between calls.
#[derive(Debug, Default)]
struct State {
    /// The last heartbeat this master wrote, which each publish carries
    /// (never another master's, read from the store).
    heartbeat: Option<Heartbeat>,
    /// The shared files the store holds.
    known_shared: HashSet<String>,
    /// When a purge last looked at the store.
    store_purged_at: Option<Instant>,
    /// The newest backup this master staged that `latest` does not name
    /// yet: the only one `publish` sends. Set by `create`, and at open by a
    /// backup the previous run staged but did not publish.
    unpublished: Option<u32>,
}

/// The object store as the master writes it (see the module docs of
/// [`super`]).
#[derive(Debug)]
pub struct S3Publisher {
    pub(super) remote: Remote,
    state: Mutex<State>,
    /// One publish at a time (the backup loop and the heartbeat both publish).
    publishing: Mutex<()>,
    /// Set once this master lost the race on `latest` (or the master read
    /// another's heartbeat).
    fence: Fence,
    /// The master's lock on its staging directory.
    _lock: MasterLock,
}

impl S3Publisher {
    /// The master's store, staging backups in `staging`: locks the staging
    /// directory, checks that the store honours conditional writes (the
    /// fence) unless `accept_unfenced`, lists what the store holds, and
    /// brings the staging directory to the store's newest backup so that
    /// new backups continue its ids and share its files.
    pub fn open(
        config: S3Config,
        staging: BackupDir,
        accept_unfenced: bool,
    ) -> Result<S3Publisher> {
        S3Publisher::on(Bucket::new(config)?, staging, accept_unfenced)
    }

    /// [`S3Publisher::open`] on a given client (an in-memory store, in tests).
    pub fn on(bucket: Bucket, staging: BackupDir, accept_unfenced: bool) -> Result<S3Publisher> {
        fs::create_dir_all(staging.path())
            .map_err(|e| Error::io(format!("create {}", staging.path().display()), e))?;
        let lock = staging.lock_for_master()?;
        let store = S3Publisher::unopened(bucket, staging, lock);
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
        let listed = store.remote.bucket.list(None)?;
        store.state().known_shared = listed
            .iter()
            .filter(|o| o.name.starts_with(SHARED_DIR))
            .map(|o| o.name.clone())
            .collect();
        store.remote.refresh(true)?;
        store.align_staging()?;
        // A backup the previous run staged after the store's newest, and
        // did not publish (a crash, a store that was down), goes out with
        // the first heartbeat: the master counts it as backed up.
        let staged = store.remote.local.newest_id().ok().flatten();
        if staged.is_some() && staged > store.remote.published() {
            store.state().unpublished = staged;
        }
        Ok(store)
    }

    /// A publisher for `rkv promote`'s hand-over alone: it writes the
    /// heartbeat (conditionally, as a master does) and never publishes a
    /// backup, since it creates none; no lock, no probe.
    pub fn for_hand_over(bucket: Bucket, staging: BackupDir) -> Result<S3Publisher> {
        let store = S3Publisher::unopened(bucket, staging, MasterLock::none());
        store.remote.refresh(true)?;
        Ok(store)
    }

    /// A publisher that has sent nothing yet.
    fn unopened(bucket: Bucket, staging: BackupDir, lock: MasterLock) -> S3Publisher {
        S3Publisher {
            remote: Remote::new(bucket, staging),
            state: Mutex::default(),
            publishing: Mutex::new(()),
            fence: Fence::default(),
            _lock: lock,
        }
    }

    /// The object store client (its request counts, for the benchmark).
    pub fn bucket(&self) -> &Bucket {
        &self.remote.bucket
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a probe object twice and replaces it with a wrong ETag: a
    /// store that honours `If-None-Match` and `If-Match` refuses the last
    /// two. `Ok(Err(behaviour))` names what the store did instead.
    fn probe_conditional_writes(&self) -> Result<std::result::Result<(), String>> {
        let name = format!(
            "{PROBE_DIR}/{}-{}",
            std::process::id(),
            crate::backup::now_ms()
        );
        let body = || Bytes::from_static(b"rkv probe");
        let mut first = self.remote.bucket.put(&name, body(), Mode::Create)?;
        // The name is this run's alone: refused, the client's retry of a
        // write whose reply was lost found its own object there.
        if first == Put::Refused && self.remote.bucket.get(&name)?.is_some_and(|b| b == body()) {
            first = Put::Written(String::new());
        }
        let second = self.remote.bucket.put(&name, body(), Mode::Create)?;
        let wrong =
            self.remote
                .bucket
                .put(&name, body(), Mode::Replace("\"0-not-an-etag\"".into()))?;
        self.remote.bucket.delete(&name)?;
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

    /// Master, at start: brings the staging directory to the store's
    /// newest backup, unless it already holds it (a restart).
    fn align_staging(&self) -> Result<()> {
        let Some(newest) = self.remote.published() else {
            return Ok(());
        };
        let staged = fs::read(self.remote.local.meta_path(newest)).ok();
        if staged.is_some()
            && staged
                == self
                    .remote
                    .bucket
                    .get(&format!("{META_DIR}/{newest}"))?
                    .map(|b| b.to_vec())
        {
            return Ok(());
        }
        tracing::info!(
            backup_id = newest,
            "the staging directory {} does not hold the store's newest backup: downloading it",
            self.remote.local.path().display()
        );
        self.remote.clear_local()?;
        self.remote.fetch(newest).map(drop)
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
            let etag = self
                .remote
                .seen()
                .latest
                .as_ref()
                .map(|(_, etag)| etag.clone());
            let body = serde_json::to_vec(&next).expect("Latest serializes");
            let mode = match etag {
                Some(etag) => Mode::Replace(etag),
                None => Mode::Create,
            };
            match self.remote.bucket.put(LATEST, Bytes::from(body), mode)? {
                Put::Written(etag) => {
                    let mut seen = self.remote.seen();
                    seen.latest = Some((next, etag));
                    seen.fetched_at = Some(Instant::now());
                    return Ok(());
                }
                Put::Refused => {
                    // Read again (with its new ETag), so that a caller that
                    // tries again writes against the version now there.
                    let seen = self.remote.refresh(true)?;
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
            location: self.remote.bucket.location(),
            context: format!("write {LATEST}"),
            failure: StoreFailure::Raced,
            source: None,
        })
    }

    /// Records that another writer replaced `latest`: a master stops
    /// publishing from now on.
    fn fenced(&self, by: String) -> Error {
        if self.fence.set(&by) {
            tracing::error!(
                other = %by,
                "{LATEST} in {} changed behind this master: another master writes there. \
                 This master stops publishing",
                self.location()
            );
        }
        Error::Fenced { by }
    }

    pub(super) fn check_fenced(&self) -> Result<()> {
        match self.fence.by() {
            Some(by) => Err(Error::Fenced { by: by.to_string() }),
            None => Ok(()),
        }
    }

    /// Publishes the backup this master staged last, if `latest` does not
    /// name it yet; returns the bytes uploaded, or `None` when there was
    /// nothing to publish.
    fn publish(&self) -> Result<Option<u64>> {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.check_fenced()?;
        let Some(id) = self.state().unpublished else {
            return Ok(None);
        };
        if self.remote.published() == Some(id) {
            self.state().unpublished = None;
            return Ok(None);
        }
        let meta_path = self.remote.local.meta_path(id);
        let meta_bytes = fs::read(&meta_path)
            .map_err(|e| Error::io(format!("read {}", meta_path.display()), e))?;
        let parsed = meta::parse(&String::from_utf8_lossy(&meta_bytes)).map_err(|e| {
            Error::BackupCorrupt {
                id,
                detail: format!("meta file {}: {e}", meta_path.display()),
            }
        })?;
        let root = self.remote.local.path();
        let known = self.state().known_shared.clone();
        // The meta file goes up beside the files it lists, not after them:
        // a backup whose files are not all there is incomplete to a reader
        // (see `list_store`), and followers go by `latest`, written last.
        let meta_name = format!("{META_DIR}/{id}");
        let meta_upload = Upload {
            name: meta_name,
            path: meta_path.clone(),
            create_only: false,
        };
        let files: Vec<Upload> = parsed
            .files
            .iter()
            .filter(|f| !known.contains(&f.path))
            .map(|f| Upload {
                name: f.path.clone(),
                path: root.join(&f.path),
                create_only: f.path.starts_with(SHARED_DIR),
            })
            .chain(std::iter::once(meta_upload))
            .collect();
        let uploaded = self.remote.bucket.upload(&files, PARALLEL)?;
        self.state().known_shared.extend(
            files
                .iter()
                .filter(|f| f.name.starts_with(SHARED_DIR))
                .map(|f| f.name.clone()),
        );
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

    /// After a local purge: deletes from the store the backups staging no
    /// longer keeps (meta file first, then private files), and the shared
    /// files no kept backup lists that are older than `grace`; and uploads
    /// again any file a kept backup lists that the store lost.
    fn purge_store(&self, grace: Duration, now: SystemTime) -> Result<()> {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let listed = self.remote.bucket.list(None)?;
        let kept: Vec<BackupInfo> = self.remote.local.list()?;
        let published = self.remote.published();
        let kept_ids: HashSet<u32> = kept.iter().map(|b| b.id).chain(published).collect();
        let oldest_kept = kept_ids.iter().min().copied().unwrap_or(0);
        let mut needed: HashSet<String> = HashSet::new();
        let mut kept_files: Vec<(String, PathBuf)> = Vec::new();
        for &id in &kept_ids {
            if let Ok(parsed) = self.remote.local.read_meta(id) {
                for f in parsed.files {
                    if published.is_some_and(|p| id <= p) {
                        kept_files.push((f.path.clone(), self.remote.local.path().join(&f.path)));
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
        self.remote.bucket.delete_many(&metas)?;
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
        self.remote.bucket.delete_many(&unused)?;
        let lost: Vec<Upload> = kept_files
            .into_iter()
            .filter(|(name, _)| !in_store.contains(name.as_str()))
            .map(|(name, path)| Upload {
                name,
                path,
                create_only: true,
            })
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                files = lost.len(),
                "the store lost files of retained backups: uploading them again"
            );
            self.remote.bucket.upload(&lost, PARALLEL)?;
        }
        let mut state = self.state();
        state.known_shared = listed
            .iter()
            .filter(|o| o.name.starts_with(SHARED_DIR) && needed.contains(&o.name))
            .map(|o| o.name.clone())
            .chain(lost.into_iter().map(|f| f.name))
            .collect();
        state.store_purged_at = Some(Instant::now());
        Ok(())
    }
}

impl S3Publisher {
    /// Brings backup `id` into the staging directory, where it normally is
    /// already.
    fn fetch(&self, id: u32) -> Result<()> {
        self.remote.fetch(id).map(drop)
    }
}

impl BackupSource for S3Publisher {
    source_through_remote!();

    fn list(&self) -> Result<Vec<BackupInfo>> {
        // The staging directory is what this master published (and at most
        // one backup it is still publishing).
        self.remote.local.list()
    }

    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
        let id = self.remote.restore_id(id)?;
        self.fetch(id)?;
        let result = self.remote.local.restore(Some(id), dest, mode);
        if let Err(Error::BackupCorrupt { .. }) = &result {
            // The staged copy, not the store, may be what is damaged:
            // download it again next time.
            let _ = fs::remove_file(self.remote.local.meta_path(id));
        }
        result
    }
}

impl BackupSink for S3Publisher {
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        self.check_fenced()?;
        let mut stats = self.remote.local.create(db, master)?;
        self.state().unpublished = Some(stats.info.id);
        let started = Instant::now();
        stats.bytes_copied = self.publish()?.unwrap_or(0);
        stats.duration += started.elapsed();
        Ok(stats)
    }

    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>> {
        let purged = self.remote.local.purge(retention, now)?;
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
            .remote
            .seen()
            .latest
            .as_ref()
            .and_then(|(l, _)| l.backup.clone());
        self.commit(Latest {
            v: 1,
            backup,
            heartbeat: Some(heartbeat.clone()),
        })
    }

    fn lock_for_master(&self) -> Result<MasterLock> {
        // The staging directory is locked from the start; across hosts the
        // conditional write of `latest` fences.
        Ok(MasterLock::none())
    }

    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        self.remote.local.scrub(cursor, budget)
    }

    fn remove_damaged(&self, damage: &[Damage]) -> Result<()> {
        self.remote.local.remove_damaged(damage)?;
        let mut state = self.state();
        for d in damage {
            state.known_shared.remove(&d.path);
        }
        Ok(())
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    fn drop_incomplete(&self) -> Result<Vec<u32>> {
        self.remote.local.drop_incomplete()
    }

    fn log_sink(&self) -> Option<&dyn crate::tail::store::LogSink> {
        Some(self)
    }
}
