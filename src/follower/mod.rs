//! The follower: turns the master's backups into a read-only replica whose
//! lag is bounded and reported.
//!
//! [`Follower::poll`] is one step (see `poll.rs`): look at the backup store,
//! and when a newer complete backup is there, apply it as a new generation (see
//! [`generations`]) and swap the serving database handle atomically; readers
//! holding the old handle finish on it. A failure leaves the serving
//! generation untouched. [`run`] wraps the steps in the daemon: a watch on the
//! store's `meta/` directory plus polling (inotify is silent on NFS).

mod backend;
mod clock;
mod config;
pub mod generations;
mod poll;
mod run;
mod tail;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backup::{BackupInfo, BackupSource, Heartbeat, RestoreMode, RestoreStats};
use crate::db::{BlockCache, Db, OpenMode, OpenOptions};
use crate::error::{Error, Result};
use crate::progress;
use crate::status::{Copied, Durations, Failures};

use clock::MasterClock;
pub use config::{FollowerArgs, FollowerConfig, StaleReads};
use generations::DataDir;
pub use run::{main, run};

/// The generation being served.
pub struct Generation {
    /// The backup it was restored from.
    pub backup: BackupInfo,
    /// The database: open read-write when the store keeps a log, which
    /// the follower alone applies into it (clients still cannot write);
    /// read-only otherwise.
    pub db: Arc<Db>,
    /// Its directory.
    pub path: PathBuf,
    /// Whether the log can be applied into it.
    pub writable: bool,
}

impl Generation {
    /// Which database the generation is a copy of, when its backup says.
    fn lineage(&self) -> Option<&str> {
        self.backup.metadata.as_ref().map(|m| m.lineage())
    }
}

/// A follower's replication state.
pub struct Follower {
    store: Box<dyn BackupSource>,
    data: DataDir,
    serving: ArcSwapOption<Generation>,
    /// Generations swapped out but perhaps still read; removed from disk
    /// once no reader holds their database.
    retired: Mutex<Vec<Arc<Generation>>>,
    state: Mutex<ApplyState>,
    /// One poll at a time: a poll lets go of `state` while it waits on the
    /// store, so that INFO and reads never wait on a request.
    polling: Mutex<()>,
    /// How long a poll may wait on the store's answer before the link is
    /// reported down (a hung request is not a healthy link).
    link_timeout: Duration,
    max_staleness: Option<Duration>,
    stale_reads: StaleReads,
    /// Shared by every generation: the SST files a new generation shares
    /// with the old one keep their cached blocks across the swap.
    cache: Option<BlockCache>,
    /// RocksDB's cap on open files per generation; `None` keeps them all open.
    max_open_files: Option<i32>,
    /// The origin of this follower's monotonic clock (see [`MasterClock`]).
    epoch: Instant,
    /// Reads refused as stale since start (counted apart from the state:
    /// readers should not wait on the apply's lock).
    reads_refused_stale: AtomicU64,
    /// Where the served generation stands in the store's log.
    place: Mutex<Option<tail::Place>>,
    /// Clients waiting for the served data to reach a position: told
    /// whenever it moves on (a batch of the log applied, a swap).
    waiters: Arc<crate::server::Waiters>,
}

/// What the follower has seen and done, for `INFO replication`.
#[derive(Debug, Default, Clone)]
struct ApplyState {
    newest_seen: Option<u32>,
    last_poll: Option<Instant>,
    last_poll_ok: bool,
    applying: bool,
    last_apply: Option<RestoreStats>,
    applies_done: u64,
    failures: Failures,
    durations: Durations,
    copied: Copied,
    last_error: Option<String>,
    /// A backup that failed to apply, and when to try it again.
    backoff: Option<(u32, Instant, Duration)>,
    /// The master's newest heartbeat, and when it was seen to change.
    heartbeat: Option<Heartbeat>,
    heartbeat_changed: Option<Instant>,
    /// The last read that returned `heartbeat`: a changed heartbeat was
    /// written after it.
    heartbeat_read_at: Option<Instant>,
    clock: MasterClock,
    /// Restores in a row that lost the race to the master's purge.
    purge_races: u32,
    /// The newest backup RocksDB cannot load, once reported.
    skipped: Option<u32>,
    /// Why the served data is not the backup directory's database (it was
    /// replaced, or another database took it over), until the follower has
    /// re-bootstrapped from it.
    lineage_change: Option<String>,
    /// When the poll in progress started asking the store what it holds
    /// (heartbeat, newest backup), until it has the answer.
    asking_since: Option<Instant>,
    /// The live tail.
    log: tail::LogState,
}

/// How long a poll may wait on the store before the link counts as down,
/// unless [`Follower::with_link_timeout`] says otherwise.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// What one poll did.
#[derive(Debug)]
pub enum PollOutcome {
    /// The newest backup is already served (or there is none).
    UpToDate,
    /// A backup was applied.
    Applied(RestoreStats),
    /// The backup failed before and waits for its retry time.
    Waiting(u32),
    /// Something failed; the serving generation is unchanged. What INFO
    /// and the log say of it (with advice) is in `rkv_last_error`.
    Failed(Error),
}

impl Follower {
    /// Takes the data directory and starts serving its `current`
    /// generation, if there is one, at once.
    pub fn open(
        store: impl BackupSource + 'static,
        data: DataDir,
        max_staleness: Option<Duration>,
        stale_reads: StaleReads,
        cache: Option<BlockCache>,
    ) -> Result<Follower> {
        Follower::open_with(store, data, max_staleness, stale_reads, cache, None)
    }

    /// [`Follower::open`] with RocksDB's cap on open files per generation.
    pub fn open_with(
        store: impl BackupSource + 'static,
        data: DataDir,
        max_staleness: Option<Duration>,
        stale_reads: StaleReads,
        cache: Option<BlockCache>,
        max_open_files: Option<i32>,
    ) -> Result<Follower> {
        let follower = Follower {
            store: Box::new(store),
            data,
            serving: ArcSwapOption::empty(),
            retired: Mutex::new(Vec::new()),
            state: Mutex::new(ApplyState::default()),
            max_staleness,
            stale_reads,
            cache,
            max_open_files,
            epoch: Instant::now(),
            reads_refused_stale: AtomicU64::new(0),
            polling: Mutex::new(()),
            link_timeout: LINK_TIMEOUT,
            place: Mutex::new(None),
            waiters: Arc::default(),
        };
        let current = follower.data.current();
        if let Some((id, path)) = &current {
            match follower.open_generation(*id, path) {
                Ok(generation) => {
                    tracing::info!(backup_id = id, "serving generation {}", path.display());
                    follower.serving.store(Some(Arc::new(generation)));
                }
                // Kept on disk: the cause may pass (too many open files, a
                // permission being fixed), and it is the only local copy.
                Err(e) => tracing::error!(
                    error = %e.report(),
                    "cannot open the current generation {}; keeping it, and waiting for the \
                     next backup",
                    path.display()
                ),
            }
        }
        // Partials are crash leftovers; other generations are unused now.
        let keep: Vec<&Path> = current.iter().map(|(_, p)| p.as_path()).collect();
        follower.data.remove_except(&keep);
        Ok(follower)
    }

    /// Opens a generation's database: read-write when the store keeps a
    /// log to apply into it, else read-only.
    fn open_db(&self, path: &Path) -> Result<(Db, bool)> {
        let writable = self.store.log().is_some();
        let mode = match writable {
            true => OpenMode::ReadWrite {
                create_if_missing: false,
            },
            false => OpenMode::ReadOnly,
        };
        let db = OpenOptions::new(mode)
            .cache(self.cache.as_ref())
            .max_open_files(self.max_open_files)
            .open(path)?;
        Ok((db, writable))
    }

    /// Opens generation `id` at `path` read-only. Its backup's facts come
    /// from the record the apply left beside it, else from the store (which
    /// costs a BackupEngine open, and may have purged the backup).
    fn open_generation(&self, id: u32, path: &Path) -> Result<Generation> {
        let (db, writable) = self.open_db(path)?;
        let backup = read_generation_info(path)
            .filter(|b| b.id == id)
            .or_else(|| {
                let list = self.store.list().ok()?;
                list.into_iter().find(|b| b.id == id)
            })
            .unwrap_or(BackupInfo {
                id,
                timestamp: 0,
                size: 0,
                files: 0,
                metadata: None,
            });
        Ok(Generation {
            backup,
            db: Arc::new(db),
            path: path.to_path_buf(),
            writable,
        })
    }

    /// Where a filesystem watch should look for news (see
    /// [`BackupSource::watch_paths`]).
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        self.store.watch_paths()
    }

    /// The generation being served.
    pub fn serving(&self) -> Option<Arc<Generation>> {
        self.serving.load_full()
    }

    fn state(&self) -> MutexGuard<'_, ApplyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports the link down when a poll has waited on the store for
    /// longer than `timeout` (the daemon passes a few poll intervals).
    pub fn with_link_timeout(mut self, timeout: Duration) -> Follower {
        self.link_timeout = timeout;
        self
    }

    /// How long the poll in progress has waited on the store, once that is
    /// past the link timeout: a hung store, reported as a down link.
    fn store_hung(&self, state: &ApplyState) -> Option<Duration> {
        let waited = state.asking_since?.elapsed();
        (waited > self.link_timeout).then_some(waited)
    }

    /// Whether the store answers, and what INFO's last error says: a store
    /// that has not answered the poll in progress comes first.
    fn link(&self, state: &ApplyState) -> (bool, Option<String>) {
        match self.store_hung(state) {
            Some(waited) => (
                false,
                Some(format!(
                    "the backup store {} has not answered for {} s; still serving",
                    self.store.location(),
                    waited.as_secs()
                )),
            ),
            None => (state.last_poll_ok, state.last_error.clone()),
        }
    }

    /// Applies backup `backup` as a new generation and serves it; a
    /// `rebootstrap` restores it whole, sharing nothing with the served
    /// generation (another database's). A failure removes what it made.
    fn apply(&self, backup: &BackupInfo, rebootstrap: bool) -> Result<RestoreStats> {
        let _span = tracing::info_span!("apply", backup_id = backup.id, rebootstrap).entered();
        let started = Instant::now();
        let base = self.serving.load_full().filter(|_| !rebootstrap);
        let partial = self
            .data
            .start(backup.id, base.as_ref().map(|g| g.path.as_path()))?;
        let result = self.restore_and_open(backup, &partial, started, base.is_none());
        if result.is_err() {
            self.data.discard(&partial);
        }
        let (mut stats, (db, writable), path) = result?;
        let generation = Arc::new(Generation {
            backup: backup.clone(),
            db: Arc::new(db),
            path,
            writable,
        });
        if let Some(old) = self.serving.swap(Some(generation)) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
        self.waiters.advanced();
        stats.duration = started.elapsed();
        tracing::info!(
            backup_id = backup.id,
            seq = backup.metadata.as_ref().map_or(0, |m| m.seq),
            files_copied = stats.files_copied,
            bytes_copied = stats.bytes_copied,
            files_kept = stats.files_kept,
            duration_ms = stats.duration.as_millis() as u64,
            "applied backup"
        );
        Ok(stats)
    }

    /// Restores `backup` into `partial`, checks it and publishes it;
    /// `whole` when nothing was linked from a served generation (a
    /// bootstrap), which logs its progress.
    fn restore_and_open(
        &self,
        backup: &BackupInfo,
        partial: &Path,
        started: Instant,
        whole: bool,
    ) -> Result<(RestoreStats, (Db, bool), PathBuf)> {
        let linked = started.elapsed();
        let restore = || {
            self.store
                .restore(Some(backup.id), partial, RestoreMode::KeepMatchingFiles)
        };
        // A bootstrap copies the whole database: say how far it got.
        let stats = if whole {
            let total = progress::Amount {
                bytes: backup.size,
                files: u64::from(backup.files),
            };
            let downloaded_before = self.store.traffic().map(|t| t.bytes_down);
            let downloaded = || {
                let now = self.store.traffic()?.bytes_down;
                let since = now.saturating_sub(downloaded_before?);
                Some(format!("{} downloaded", progress::human(since)))
            };
            let what = match self.serving.load().is_none() {
                true => format!("bootstrap: restoring backup {}", backup.id),
                false => format!("re-bootstrap: restoring backup {}", backup.id),
            };
            // A file is done once it has its recorded size.
            let expected: Option<HashMap<String, u64>> =
                self.store.files(&[backup.id]).ok().map(|files| {
                    files
                        .into_iter()
                        .map(|(path, size)| (crate::backup::restored_name(&path), size))
                        .collect()
                });
            let done = || match &expected {
                Some(expected) => progress::usage_against(partial, expected),
                None => progress::usage(partial),
            };
            progress::logged(
                &what,
                total,
                BOOTSTRAP_LOG_PERIOD,
                done,
                downloaded,
                restore,
            )?
        } else {
            restore()?
        };
        let restored = started.elapsed();
        write_generation_info(partial, backup);
        // Check it opens and holds what the backup promises before it can
        // become `current`. RocksDB keeps paths, so it is opened where it
        // will stay: renamed first, published after the check.
        let path = self.data.finish(partial)?;
        let (db, writable) = self.open_db(&path)?;
        let db = (check(db, backup)?, writable);
        let opened = started.elapsed();
        self.data.publish(&path)?;
        tracing::debug!(
            backup_id = backup.id,
            link_ms = linked.as_millis() as u64,
            restore_ms = (restored - linked).as_millis() as u64,
            open_ms = (opened - restored).as_millis() as u64,
            publish_ms = (started.elapsed() - opened).as_millis() as u64,
            "apply phases"
        );
        Ok((stats, db, path))
    }

    /// Drops retired generations whose database no reader holds and, when
    /// any went, removes every directory but the ones still in use. A
    /// reader holds the database, not the generation: the directory must
    /// outlive it, as RocksDB opens SST files lazily when it caps open files.
    pub fn release_retired(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let before = retired.len();
        retired.retain(|g| Arc::strong_count(&g.db) > 1);
        if retired.len() == before {
            return;
        }
        let serving = self.serving.load_full();
        let mut keep: Vec<&Path> = retired.iter().map(|g| g.path.as_path()).collect();
        keep.extend(serving.iter().map(|g| g.path.as_path()));
        if !self.state().applying {
            self.data.remove_except(&keep);
        }
    }
}

/// Fails when the restored database holds less than its backup's metadata
/// promises.
fn check(db: Db, backup: &BackupInfo) -> Result<Db> {
    if let Some(meta) = &backup.metadata {
        if db.latest_sequence_number() < meta.seq {
            return Err(Error::BackupCorrupt {
                id: backup.id,
                detail: format!(
                    "restored sequence number {} is below the {} its metadata records",
                    db.latest_sequence_number(),
                    meta.seq
                ),
            });
        }
    }
    Ok(db)
}

/// How often a bootstrap logs how far its restore got.
const BOOTSTRAP_LOG_PERIOD: Duration = Duration::from_secs(5);

/// The backup facts of a generation (`rkv promote` reads them too), kept beside its database so that a
/// restarted follower knows its data's age even after the master purged
/// that backup.
pub const GENERATION_INFO: &str = "rkv-generation.json";

fn write_generation_info(dir: &Path, backup: &BackupInfo) {
    let info = serde_json::json!({
        "id": backup.id,
        "timestamp": backup.timestamp,
        "metadata": backup.metadata,
    });
    if let Err(e) = std::fs::write(dir.join(GENERATION_INFO), info.to_string()) {
        tracing::warn!("cannot record the generation's backup facts: {e}");
    }
}

/// The backup facts recorded beside the generation at `dir`, if readable.
pub fn read_generation_info(dir: &Path) -> Option<BackupInfo> {
    let bytes = std::fs::read(dir.join(GENERATION_INFO)).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(BackupInfo {
        id: value["id"].as_u64()? as u32,
        timestamp: value["timestamp"].as_u64().unwrap_or(0),
        size: 0,
        files: 0,
        metadata: serde_json::from_value(value["metadata"].clone()).ok(),
    })
}

#[cfg(test)]
mod tests;
