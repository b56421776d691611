//! The follower: turns the master's backups into a read-only replica whose
//! lag is bounded and reported.
//!
//! [`Follower::poll`] is one step: look at the backup store, and when a newer
//! complete backup is there, apply it as a new generation (see
//! [`generations`]) and swap the serving database handle atomically; readers
//! holding the old handle finish on it. A failure leaves the serving
//! generation untouched. [`run`] wraps the steps in the daemon: a watch on the
//! store's `meta/` directory plus polling (inotify is silent on NFS).

mod config;
pub mod generations;
mod run;
mod watch;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backup::{BackupInfo, BackupSource, Heartbeat, RestoreMode, RestoreStats};
use crate::db::{BlockCache, Db, OpenMode};
use crate::error::{Error, Result};
use crate::server::{Backend, BackupRequest, Refusal, Role};
use crate::status::{DaemonStatus, FollowerStatus, LastApply};

pub use config::{FollowerArgs, FollowerConfig, StaleReads};
use generations::DataDir;
pub use run::{main, run};

/// The generation being served.
pub struct Generation {
    /// The backup it was restored from.
    pub backup: BackupInfo,
    /// The database, open read-only.
    pub db: Arc<Db>,
    /// Its directory.
    pub path: PathBuf,
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
    max_staleness: Option<Duration>,
    stale_reads: StaleReads,
    /// Shared by every generation: the SST files a new generation shares
    /// with the old one keep their cached blocks across the swap.
    cache: Option<BlockCache>,
    /// RocksDB's cap on open files per generation; `None` keeps them all open.
    max_open_files: Option<i32>,
    /// The origin of this follower's monotonic clock (see [`MasterClock`]).
    epoch: Instant,
}

/// The master's clock as this follower sees it, learnt from heartbeats.
///
/// A heartbeat that changed between two reads was written after the
/// first, so its timestamp `M` read at monotonic time `L` gives the offset
/// `M - L`, below the true one by at most the read's delay. The highest of
/// the recent samples converts the master's timestamps to this host's
/// clock: staleness then holds whatever the skew between the hosts, and a
/// stepped clock ages out of the window.
#[derive(Debug, Default, Clone)]
struct MasterClock {
    samples: VecDeque<i64>,
}

impl MasterClock {
    const WINDOW: usize = 16;

    fn sample(&mut self, offset_ms: i64) {
        if self.samples.len() == Self::WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(offset_ms);
    }

    /// The master's clock minus this follower's monotonic clock, in ms;
    /// `None` until a heartbeat was seen to change.
    fn offset(&self) -> Option<i64> {
        self.samples.iter().copied().max()
    }
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
    failures: u64,
    last_error: Option<String>,
    /// A backup that failed to apply, and when to try it again.
    backoff: Option<(u32, Instant, Duration)>,
    /// The master's newest heartbeat, and when it was seen to change.
    heartbeat: Option<Heartbeat>,
    heartbeat_changed: Option<Instant>,
    clock: MasterClock,
    /// Restores in a row that lost the race to the master's purge.
    purge_races: u32,
    /// The newest backup RocksDB cannot load, once reported.
    skipped: Option<u32>,
    /// Why the served data is not the backup directory's database (it was
    /// replaced, or another database took it over), until the follower has
    /// re-bootstrapped from it.
    lineage_change: Option<String>,
}

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
                    error = %e,
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

    fn open_db(&self, path: &Path) -> Result<Db> {
        Db::open_tuned(
            path,
            OpenMode::ReadOnly,
            self.cache.as_ref(),
            self.max_open_files,
        )
    }

    /// Opens generation `id` at `path` read-only. Its backup's facts come
    /// from the record the apply left beside it, else from the store (which
    /// costs a BackupEngine open, and may have purged the backup).
    fn open_generation(&self, id: u32, path: &Path) -> Result<Generation> {
        let db = self.open_db(path)?;
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

    /// Milliseconds on this follower's monotonic clock.
    fn mono_ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch).as_millis() as i64
    }

    /// Takes in a heartbeat read at `read_at`: a changed one is a reading of
    /// the master's clock (when it is of the served database, or nothing is
    /// served yet).
    fn observe_heartbeat(&self, state: &mut ApplyState, heartbeat: Heartbeat, read_at: Instant) {
        if state.heartbeat.as_ref() == Some(&heartbeat) {
            return;
        }
        let serving = self.serving.load();
        let same_lineage = serving
            .as_ref()
            .and_then(|g| g.lineage())
            .is_none_or(|l| l == heartbeat.lineage());
        // The first heartbeat read may be hours old: only a change tells
        // when one was written.
        if state.heartbeat.is_some() && same_lineage {
            state
                .clock
                .sample(heartbeat.ms as i64 - self.mono_ms(read_at));
        }
        state.heartbeat_changed = Some(read_at);
        state.heartbeat = Some(heartbeat);
    }

    /// One step: apply the newest complete backup if it is newer than the
    /// one served, or if it is of another database than the one served.
    pub fn poll(&self) -> PollOutcome {
        let serving = self.serving.load_full();
        let serving_id = serving.as_ref().map(|g| g.backup.id);
        let heartbeat = self.store.read_heartbeat();
        let read_at = Instant::now();
        // Listing meta/ says whether anything is new; only then is a
        // BackupEngine opened (it reads every meta file and lists every
        // shared file, which on NFS is not free every poll interval).
        let other_master = match (&heartbeat, serving.as_ref().and_then(|g| g.lineage())) {
            (Some(h), Some(served)) => h.lineage() != served,
            _ => false,
        };
        let listed = self.store.newest_id().and_then(|newest| match newest {
            Some(id) if serving_id != Some(id) || other_master => Ok((newest, self.store.list()?)),
            _ => Ok((newest, Vec::new())),
        });
        let mut state = self.state();
        state.last_poll = Some(read_at);
        if let Some(heartbeat) = heartbeat {
            self.observe_heartbeat(&mut state, heartbeat, read_at);
        }
        let (newest_id, backups) = match listed {
            Ok(listed) => {
                state.last_poll_ok = true;
                listed
            }
            Err(e) => {
                state.last_poll_ok = false;
                let message = e.to_string();
                // Said once per distinct failure. A missing directory before
                // the first backup is the normal start of a new deployment.
                if state.last_error.as_deref() != Some(&message) {
                    let first_wait = matches!(e, Error::BackupDirMissing { .. })
                        && self.serving.load().is_none();
                    if first_wait {
                        tracing::info!("waiting for the backup directory to appear: {message}");
                    } else {
                        tracing::warn!(
                            error = %message,
                            "cannot read the backup directory; still serving"
                        );
                    }
                }
                state.last_error = Some(message);
                return PollOutcome::Failed(e);
            }
        };
        if newest_id.is_some() {
            state.newest_seen = newest_id;
        }
        let Some(newest_id) = newest_id else {
            return PollOutcome::UpToDate;
        };
        if serving_id == Some(newest_id) && !other_master {
            if state.backoff.is_none() && state.skipped.is_none() {
                state.last_error = None;
            }
            return PollOutcome::UpToDate;
        }
        // The newest backup RocksDB can load; a newer one it cannot is
        // skipped, and said.
        let newest = backups.last().cloned();
        if newest.as_ref().is_none_or(|b| b.id < newest_id)
            && state.skipped != Some(newest_id)
            && self.store.contains(newest_id)
        {
            let detail = self
                .store
                .find_damage(newest_id)
                .unwrap_or_else(|| "RocksDB cannot load it".to_string());
            let message = format!("backup {newest_id} skipped: {detail}");
            tracing::error!(backup_id = newest_id, detail = %detail, "skipping a backup that cannot be loaded");
            state.failures += 1;
            state.skipped = Some(newest_id);
            state.last_error = Some(message);
        }
        let Some(newest) = newest else {
            return PollOutcome::UpToDate;
        };
        let lineage_change = match (&serving, newest.metadata.as_ref()) {
            (Some(g), Some(meta)) if g.lineage().is_some_and(|l| l != meta.lineage()) => {
                Some(format!(
                    "the backup directory now holds another database's backups ({} at {}), \
                     not the served one's ({}): re-bootstrapping from backup {}",
                    meta.lineage(),
                    meta.master,
                    g.lineage().unwrap_or_default(),
                    newest.id
                ))
            }
            (Some(g), _) if newest.id < g.backup.id => Some(format!(
                "the backup directory's ids went back (newest {}, served {}): it was replaced; \
                 re-bootstrapping from backup {}",
                newest.id, g.backup.id, newest.id
            )),
            _ => None,
        };
        match &lineage_change {
            Some(why) => {
                if state.lineage_change.as_deref() != Some(why) {
                    tracing::error!("{why}");
                }
                state.lineage_change = Some(why.clone());
                state.last_error = Some(why.clone());
            }
            None if serving_id.is_some_and(|id| id >= newest.id) => return PollOutcome::UpToDate,
            None => {}
        }
        if let Some((id, retry_at, _)) = state.backoff {
            if id == newest.id && Instant::now() < retry_at {
                return PollOutcome::Waiting(id);
            }
        }
        state.applying = true;
        drop(state);

        let started = Instant::now();
        let result = self.apply(&newest, lineage_change.is_some());
        let mut state = self.state();
        state.applying = false;
        match result {
            Ok(stats) => {
                state.applies_done += 1;
                state.last_apply = Some(stats.clone());
                state.backoff = None;
                state.last_error = None;
                state.purge_races = 0;
                state.skipped = None;
                if state.lineage_change.take().is_some() {
                    // The old database's clock readings say nothing of the new.
                    state.clock = MasterClock::default();
                    tracing::warn!(
                        backup_id = newest.id,
                        "re-bootstrapped: serving the backup directory's database"
                    );
                }
                drop(state);
                self.release_retired();
                PollOutcome::Applied(stats)
            }
            Err(e) => {
                // Gone from a directory that is still there: purged.
                let purged = !self.store.contains(newest.id)
                    && self.store.newest_id().is_ok_and(|n| n.is_some());
                let e = match e {
                    _ if purged => Error::BackupPurged {
                        id: newest.id,
                        ran: started.elapsed(),
                        keep_within: state
                            .heartbeat
                            .as_ref()
                            .and_then(|h| h.keep_within_ms)
                            .map(Duration::from_millis),
                    },
                    e => e,
                };
                let mut message = format!("apply backup {}: {e}", newest.id);
                state.failures += 1;
                match e {
                    Error::BackupCorrupt { .. } => {
                        // Retry with backoff: a copy may still be arriving
                        // (NFS), the master heals damaged files, and a newer
                        // backup is tried as soon as it appears.
                        let delay = match state.backoff {
                            Some((id, _, delay)) if id == newest.id => {
                                (delay * 2).min(Duration::from_secs(60))
                            }
                            _ => Duration::from_secs(1),
                        };
                        state.backoff = Some((newest.id, Instant::now() + delay, delay));
                        tracing::error!(error = %message, retry_in = ?delay, "serving the previous data");
                    }
                    Error::BackupPurged { .. } => {
                        state.purge_races += 1;
                        if state.purge_races > 1 {
                            message = format!(
                                "{message}; {} restores in a row lost this race: raise \
                                 --keep-within on the master above the time a restore takes",
                                state.purge_races
                            );
                            tracing::error!(error = %message, "serving the previous data");
                        } else {
                            tracing::warn!(error = %message, "serving the previous data; trying the newest backup");
                        }
                    }
                    _ => tracing::warn!(error = %message, "serving the previous data, will retry"),
                }
                state.last_error = Some(message);
                PollOutcome::Failed(e)
            }
        }
    }

    /// Applies backup `backup` as a new generation and serves it; a
    /// `rebootstrap` restores it whole, sharing nothing with the served
    /// generation (another database's). A failure removes what it made.
    fn apply(&self, backup: &BackupInfo, rebootstrap: bool) -> Result<RestoreStats> {
        let started = Instant::now();
        let base = self.serving.load_full().filter(|_| !rebootstrap);
        let partial = self
            .data
            .start(backup.id, base.as_ref().map(|g| g.path.as_path()))?;
        let result = self.restore_and_open(backup, &partial, started);
        if result.is_err() {
            self.data.discard(&partial);
        }
        let (mut stats, db, path) = result?;
        let generation = Arc::new(Generation {
            backup: backup.clone(),
            db: Arc::new(db),
            path,
        });
        if let Some(old) = self.serving.swap(Some(generation)) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
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

    /// Restores `backup` into `partial`, checks it and publishes it.
    fn restore_and_open(
        &self,
        backup: &BackupInfo,
        partial: &Path,
        started: Instant,
    ) -> Result<(RestoreStats, Db, PathBuf)> {
        let linked = started.elapsed();
        let stats = self
            .store
            .restore(Some(backup.id), partial, RestoreMode::KeepMatchingFiles)?;
        let restored = started.elapsed();
        write_generation_info(partial, backup);
        // Check it opens and holds what the backup promises before it can
        // become `current`. RocksDB keeps paths, so it is opened where it
        // will stay: renamed first, published after the check.
        let path = self.data.finish(partial)?;
        let db = check(self.open_db(&path)?, backup)?;
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

    /// How old the served data is, on this follower's clock: now minus the
    /// moment it was last known to be the master's whole state. That is the
    /// served backup's creation, or the master's latest heartbeat when the
    /// master had written nothing beyond that backup; both are master
    /// timestamps, converted with the offset heartbeats measured (see
    /// [`MasterClock`]). `None` until a heartbeat was seen to change: an
    /// unknown age is not a fresh one.
    pub fn staleness(&self) -> Option<Duration> {
        let generation = self.serving.load_full()?;
        let state = self.state();
        let offset = state.clock.offset()?;
        let mut current_as_of = generation.backup.created_ms() as i64;
        if let (Some(meta), Some(heartbeat)) = (&generation.backup.metadata, &state.heartbeat) {
            if heartbeat.seq <= meta.seq && heartbeat.lineage() == meta.lineage() {
                current_as_of = current_as_of.max(heartbeat.ms as i64);
            }
        }
        let now_on_master = self.mono_ms(Instant::now()) + offset;
        Some(Duration::from_millis(
            now_on_master.saturating_sub(current_as_of).max(0) as u64,
        ))
    }

    /// The master's clock minus this host's, in ms (from heartbeats).
    pub fn clock_skew_ms(&self) -> Option<i64> {
        let offset = self.state().clock.offset()?;
        let now = Instant::now();
        Some(offset + self.mono_ms(now) - crate::backup::now_ms() as i64)
    }

    /// Whether the follower serves the backup directory's database within
    /// `--max-staleness`.
    pub fn healthy(&self) -> bool {
        if self.serving.load().is_none() || self.state().lineage_change.is_some() {
            return false;
        }
        match self.max_staleness {
            None => true,
            Some(max) => self.staleness().is_some_and(|s| s <= max),
        }
    }

    /// Why the follower is not healthy, for refusals and `/healthz`.
    fn unhealthy_reason(&self) -> String {
        if let Some(why) = self.state().lineage_change.clone() {
            return why;
        }
        let max = humantime::format_duration(self.max_staleness.unwrap_or_default());
        match self.staleness() {
            Some(age) => format!(
                "the data is {} old, more than --max-staleness {max}: the master has not \
                 published a newer backup",
                humantime::format_duration(Duration::from_millis(age.as_millis() as u64)),
            ),
            None => format!(
                "the data's age is unknown (no heartbeat of the master seen changing since \
                 this follower started), so it cannot be shown within --max-staleness {max}"
            ),
        }
    }

    /// A one-line summary for systemd's STATUS.
    pub fn status_line(&self) -> String {
        let Some(g) = self.serving() else {
            return "waiting for the first backup".to_string();
        };
        let age = match self.staleness() {
            Some(age) => humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
            None => "age unknown".to_string(),
        };
        format!(
            "serving backup {} ({age}){}",
            g.backup.id,
            if self.healthy() { "" } else { ", STALE" }
        )
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

/// The backup facts of a generation, kept beside its database so that a
/// restarted follower knows its data's age even after the master purged
/// that backup.
const GENERATION_INFO: &str = "rkv-generation.json";

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

fn read_generation_info(dir: &Path) -> Option<BackupInfo> {
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

impl Backend for Follower {
    fn role_name(&self) -> &'static str {
        "slave"
    }

    fn reader(&self) -> std::result::Result<Arc<Db>, Refusal> {
        let Some(generation) = self.serving.load_full() else {
            return Err(Refusal::NoDataYet {
                store: self.store.location(),
            });
        };
        if self.stale_reads == StaleReads::Refuse && !self.healthy() {
            return Err(Refusal::Stale {
                reason: self.unhealthy_reason(),
            });
        }
        Ok(Arc::clone(&generation.db))
    }

    fn writer(&self) -> std::result::Result<Arc<Db>, Refusal> {
        Err(Refusal::ReadOnlyReplica)
    }

    fn role(&self) -> Role {
        let serving = self.serving.load();
        let meta = serving.as_ref().and_then(|g| g.backup.metadata.as_ref());
        let master = meta.map(|m| m.master.clone()).unwrap_or_default();
        Role::Replica {
            master_host: master.split(':').next().unwrap_or_default().to_string(),
            connected: self.state().last_poll_ok && serving.is_some(),
            offset: meta.map_or(0, |m| m.seq),
        }
    }

    fn request_backup(&self) -> std::result::Result<BackupRequest, Refusal> {
        Err(Refusal::NoBackupsHere)
    }

    fn backup_now(&self) -> std::result::Result<(), Refusal> {
        Err(Refusal::NoBackupsHere)
    }

    fn lastsave(&self) -> i64 {
        self.serving
            .load()
            .as_ref()
            .map_or(0, |g| (g.backup.created_ms() / 1000) as i64)
    }

    fn status(&self) -> DaemonStatus {
        let state = self.state().clone();
        let serving = self.serving.load_full();
        let meta = serving.as_ref().and_then(|g| g.backup.metadata.clone());
        DaemonStatus::Follower(FollowerStatus {
            master: meta.as_ref().map(|m| m.master.clone()).unwrap_or_default(),
            link_up: state.last_poll_ok,
            last_poll_ago: state.last_poll.map(|t| t.elapsed()),
            applying: state.applying,
            backup_dir: self.store.location(),
            applied_backup_id: serving.as_ref().map_or(0, |g| g.backup.id),
            applied_created_ms: serving.as_ref().map_or(0, |g| g.backup.created_ms()),
            applied_seq: meta.as_ref().map_or(0, |m| m.seq),
            staleness: self.staleness(),
            clock_skew_ms: self.clock_skew_ms(),
            newest_backup_id: state.newest_seen.unwrap_or(0),
            heartbeat_ago: state.heartbeat_changed.map(|t| t.elapsed()),
            lineage_change: state.lineage_change.clone(),
            last_apply: state.last_apply.as_ref().map(|a| LastApply {
                duration: a.duration,
                bytes_copied: a.bytes_copied,
                files_copied: a.files_copied,
                files_kept: a.files_kept,
            }),
            applies_done: state.applies_done,
            failures: state.failures,
            last_error: state.last_error.clone(),
            max_staleness: self.max_staleness,
            stale_reads: self.stale_reads.as_str(),
            healthy: self.healthy(),
            last_save_unix: self.lastsave(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupDir, BackupSink};
    use crate::db::OpenMode;

    struct Setup {
        _tmp: tempfile::TempDir,
        master: Db,
        store: BackupDir,
        data: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let master = Db::open(
            &tmp.path().join("db"),
            OpenMode::ReadWrite {
                create_if_missing: true,
            },
        )
        .unwrap();
        let store = BackupDir::new(tmp.path().join("backups"));
        let data = tmp.path().join("data");
        Setup {
            _tmp: tmp,
            master,
            store,
            data,
        }
    }

    fn follower(s: &Setup) -> Follower {
        Follower::open(
            BackupDir::new(s.store.path()),
            DataDir::lock(&s.data).unwrap(),
            None,
            StaleReads::Serve,
            Some(BlockCache::new(8 << 20)),
        )
        .unwrap()
    }

    fn get(f: &Follower, key: &[u8]) -> Option<Vec<u8>> {
        f.reader().ok().unwrap().get(key).unwrap()
    }

    #[test]
    fn applies_each_new_backup_and_jumps_to_the_newest() {
        let s = setup();
        let f = follower(&s);
        assert!(
            matches!(f.poll(), PollOutcome::Failed(_)),
            "no backup dir yet"
        );
        assert!(f.reader().is_err());
        s.master.put(b"k", b"1").unwrap();
        s.store.create(&s.master, "t").unwrap();
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
        assert!(matches!(f.poll(), PollOutcome::UpToDate));

        // Three backups behind: one apply, straight to the newest.
        for v in [b"2", b"3", b"4"] {
            s.master.put(b"k", v).unwrap();
            s.store.create(&s.master, "t").unwrap();
        }
        let PollOutcome::Applied(stats) = f.poll() else {
            panic!()
        };
        assert_eq!(stats.id, 4);
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"4"[..]));
        // Only the serving generation is left on disk.
        let gens: Vec<_> = std::fs::read_dir(&s.data)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
            .collect();
        assert_eq!(gens.len(), 1);
    }

    #[test]
    fn a_reader_keeps_its_generation_across_a_swap() {
        let s = setup();
        let f = follower(&s);
        s.master.put(b"k", b"old").unwrap();
        s.store.create(&s.master, "t").unwrap();
        f.poll();
        let held = f.reader().unwrap();
        s.master.put(b"k", b"new").unwrap();
        s.store.create(&s.master, "t").unwrap();
        f.poll();
        f.release_retired();
        // The old handle still reads its own data; new readers see the new.
        assert_eq!(held.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"new"[..]));
        drop(held);
        f.release_retired();
        assert!(!s.data.join("gen-000001").exists());
    }

    #[test]
    fn a_restarted_follower_serves_current_at_once() {
        let s = setup();
        {
            let f = follower(&s);
            s.master.put(b"k", b"v").unwrap();
            s.store.create(&s.master, "t").unwrap();
            f.poll();
        }
        // A crash left a partial behind.
        std::fs::create_dir(s.data.join("gen-000002.partial")).unwrap();
        let f = follower(&s);
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"v"[..]));
        assert!(!s.data.join("gen-000002.partial").exists());
    }

    #[test]
    fn staleness_bound_refuses_reads_when_asked() {
        let s = setup();
        s.master.put(b"k", b"v").unwrap();
        s.store.create(&s.master, "t").unwrap();
        let data = DataDir::lock(&s.data).unwrap();
        let f = Follower::open(
            BackupDir::new(s.store.path()),
            data,
            Some(Duration::from_millis(1)),
            StaleReads::Refuse,
            None,
        )
        .unwrap();
        f.poll();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!f.healthy());
        let Err(Refusal::Stale { reason }) = f.reader() else {
            panic!("stale reads must be refused")
        };
        assert!(reason.contains("max-staleness"), "{reason}");
        assert!(matches!(f.writer(), Err(Refusal::ReadOnlyReplica)));
    }

    fn gen_dirs(s: &Setup) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&s.data)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gen-"))
            .collect();
        names.sort();
        names
    }

    fn heartbeat(s: &Setup, ms: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            v: 1,
            seq,
            ms,
            master: "t".into(),
            db_id: s.master.identity(),
            token: Some("token".into()),
            pid: None,
            keep_within_ms: None,
        }
    }

    #[test]
    fn a_failed_apply_leaves_no_partial_behind() {
        let s = setup();
        let f = follower(&s);
        s.master.put(b"k", b"1").unwrap();
        s.store.create(&s.master, "t").unwrap();
        f.poll();
        s.master.put(b"k", b"2").unwrap();
        let id = s.store.create(&s.master, "t").unwrap().info.id;
        let private = s.store.path().join(format!("private/{id}"));
        let manifest = std::fs::read_dir(&private)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("MANIFEST"))
            .unwrap();
        let mut bytes = std::fs::read(&manifest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&manifest, bytes).unwrap();

        let PollOutcome::Failed(Error::BackupCorrupt { .. }) = f.poll() else {
            panic!("a corrupt backup must fail")
        };
        let message = f.state().last_error.clone().unwrap();
        // The message names the damaged file.
        assert!(message.contains("MANIFEST"), "{message}");
        assert_eq!(gen_dirs(&s), ["gen-000001"], "the partial was left behind");
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_truncated_meta_file_is_reported_not_skipped_silently() {
        let s = setup();
        let f = follower(&s);
        s.master.put(b"k", b"1").unwrap();
        s.store.create(&s.master, "t").unwrap();
        f.poll();
        s.master.put(b"k", b"2").unwrap();
        s.store.create(&s.master, "t").unwrap();
        let meta = s.store.path().join("meta/2");
        let text = std::fs::read(&meta).unwrap();
        std::fs::write(&meta, &text[..text.len() / 2]).unwrap();
        f.poll();
        let error = f.state().last_error.clone().unwrap_or_default();
        assert!(error.contains("backup 2 skipped"), "{error:?}");
        assert_eq!(f.state().failures, 1);
        // Said once, not counted again on every poll.
        f.poll();
        assert_eq!(f.state().failures, 1);
    }

    #[test]
    fn a_reader_holding_the_old_database_keeps_its_files_with_few_open_files() {
        let s = setup();
        // Many SST files, more than RocksDB may keep open.
        for i in 0..40 {
            s.master.put(format!("k{i:03}").as_bytes(), b"old").unwrap();
            s.master.flush().unwrap();
        }
        s.store.create(&s.master, "t").unwrap();
        let f = Follower::open_with(
            BackupDir::new(s.store.path()),
            DataDir::lock(&s.data).unwrap(),
            None,
            StaleReads::Serve,
            None,
            Some(10),
        )
        .unwrap();
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        let held = f.reader().unwrap();
        drop(f.serving());
        s.master.put(b"new", b"1").unwrap();
        s.store.create(&s.master, "t").unwrap();
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        f.release_retired();
        // Every SST of the old generation is read again by path.
        for i in 0..40 {
            let value = held.get(format!("k{i:03}").as_bytes()).unwrap();
            assert_eq!(value.as_deref(), Some(&b"old"[..]), "key {i}");
        }
        drop(held);
        f.release_retired();
        assert_eq!(gen_dirs(&s), ["gen-000002"]);
    }

    #[test]
    fn an_unopenable_current_generation_is_kept() {
        let s = setup();
        {
            let f = follower(&s);
            s.master.put(b"k", b"v").unwrap();
            s.store.create(&s.master, "t").unwrap();
            f.poll();
        }
        let gen = s.data.join("gen-000001");
        std::fs::rename(gen.join("CURRENT"), gen.join("CURRENT.away")).unwrap();
        let f = follower(&s);
        assert!(f.serving().is_none());
        assert!(gen.exists(), "the only local copy was deleted");
        drop(f);
        std::fs::rename(gen.join("CURRENT.away"), gen.join("CURRENT")).unwrap();
        let f = follower(&s);
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_replaced_backup_directory_is_re_bootstrapped() {
        let s = setup();
        let f = follower(&s);
        for v in [b"1", b"2", b"3"] {
            s.master.put(b"k", v).unwrap();
            s.store.create(&s.master, "t").unwrap();
        }
        f.poll();
        assert_eq!(f.serving().unwrap().backup.id, 3);
        // The directory is replaced by one of a new database: ids restart.
        std::fs::remove_dir_all(s.store.path()).unwrap();
        let other = Db::open(
            &s._tmp.path().join("db2"),
            OpenMode::ReadWrite {
                create_if_missing: true,
            },
        )
        .unwrap();
        other.put(b"k", b"new").unwrap();
        s.store.create(&other, "t").unwrap();
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"new"[..]));
        assert!(f.healthy());

        // Once more, and the new ids pass the served one: the identity tells.
        std::fs::remove_dir_all(s.store.path()).unwrap();
        for v in [b"a", b"b", b"c"] {
            s.master.put(b"k", v).unwrap();
            s.store.create(&s.master, "t").unwrap();
        }
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"c"[..]));
        assert!(f.healthy());
    }

    #[test]
    fn staleness_is_measured_on_the_followers_clock_whatever_the_masters() {
        let s = setup();
        let f = Follower::open(
            BackupDir::new(s.store.path()),
            DataDir::lock(&s.data).unwrap(),
            Some(Duration::from_secs(3)),
            StaleReads::Refuse,
            None,
        )
        .unwrap();
        s.master.put(b"k", b"v").unwrap();
        // The master's clock is two hours ahead: its backup and heartbeats
        // say so.
        let ahead = crate::backup::now_ms() + 2 * 3600 * 1000;
        s.store.create(&s.master, "t").unwrap();
        let seq = s.master.latest_sequence_number();
        s.store.write_heartbeat(&heartbeat(&s, ahead, seq)).unwrap();
        f.poll();
        assert_eq!(f.staleness(), None, "no heartbeat seen changing yet");
        assert!(!f.healthy());
        std::thread::sleep(Duration::from_millis(50));
        s.store
            .write_heartbeat(&heartbeat(&s, ahead + 50, seq))
            .unwrap();
        f.poll();
        let age = f.staleness().unwrap();
        assert!(age < Duration::from_secs(1), "{age:?}");
        assert!(f.healthy());
        let skew = f.clock_skew_ms().unwrap();
        assert!((skew - 7_200_000).abs() < 1000, "skew {skew}");

        // The master stops: no new heartbeat. Its clock being ahead must not
        // keep the data looking fresh.
        std::thread::sleep(Duration::from_millis(3100));
        f.poll();
        assert!(f.staleness().unwrap() > Duration::from_secs(3));
        assert!(!f.healthy());
        assert!(f.reader().is_err());

        // Two hours behind instead, and alive: fresh data is served. (A new
        // follower: one that saw the clock ahead distrusts a clock that
        // steps back for a window of heartbeats, erring on the stale side.)
        drop(f);
        let f = Follower::open(
            BackupDir::new(s.store.path()),
            DataDir::lock(&s.data).unwrap(),
            Some(Duration::from_secs(3)),
            StaleReads::Refuse,
            None,
        )
        .unwrap();
        let behind = crate::backup::now_ms() - 2 * 3600 * 1000;
        for i in 0..2 {
            s.store
                .write_heartbeat(&heartbeat(&s, behind + i, seq))
                .unwrap();
            f.poll();
        }
        assert!(f.staleness().unwrap() < Duration::from_secs(1));
        assert!(f.reader().is_ok());
    }

    /// A source with faults on demand, around a real directory: its restore
    /// fails, or the backup is purged between the list and the restore, or
    /// the whole store goes away.
    struct FaultySource {
        inner: BackupDir,
        fail_restore: std::sync::atomic::AtomicBool,
        purge_on_restore: std::sync::atomic::AtomicBool,
        purged: Mutex<Vec<u32>>,
        gone: std::sync::atomic::AtomicBool,
    }

    impl FaultySource {
        fn new(inner: BackupDir) -> Arc<FaultySource> {
            Arc::new(FaultySource {
                inner,
                fail_restore: Default::default(),
                purge_on_restore: Default::default(),
                purged: Mutex::new(Vec::new()),
                gone: Default::default(),
            })
        }

        fn set(flag: &std::sync::atomic::AtomicBool, on: bool) {
            flag.store(on, std::sync::atomic::Ordering::SeqCst);
        }

        fn missing(&self) -> Error {
            Error::BackupDirMissing {
                path: self.inner.path().to_path_buf(),
            }
        }
    }

    impl BackupSource for Arc<FaultySource> {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn list(&self) -> Result<Vec<BackupInfo>> {
            if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(self.missing());
            }
            let purged = self.purged.lock().unwrap().clone();
            Ok(self
                .inner
                .list()?
                .into_iter()
                .filter(|b| !purged.contains(&b.id))
                .collect())
        }
        fn newest_id(&self) -> Result<Option<u32>> {
            if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(self.missing());
            }
            self.inner.newest_id()
        }
        fn contains(&self, id: u32) -> bool {
            !self.purged.lock().unwrap().contains(&id) && self.inner.contains(id)
        }
        fn verify(&self, id: u32) -> Result<()> {
            self.inner.verify(id)
        }
        fn find_damage(&self, id: u32) -> Option<String> {
            self.inner.find_damage(id)
        }
        fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.fail_restore.load(SeqCst) {
                return Err(Error::io(
                    "restore",
                    std::io::Error::other("injected: the disk is failing"),
                ));
            }
            if self.purge_on_restore.load(SeqCst) {
                let id = id.unwrap();
                self.purged.lock().unwrap().push(id);
                return Err(Error::BackupNotFound {
                    id,
                    path: self.inner.path().to_path_buf(),
                });
            }
            self.inner.restore(id, dest, mode)
        }
        fn read_heartbeat(&self) -> Option<Heartbeat> {
            self.inner.read_heartbeat()
        }
        fn watch_paths(&self) -> Vec<PathBuf> {
            Vec::new()
        }
    }

    fn faulty_follower(s: &Setup) -> (Follower, Arc<FaultySource>) {
        let source = FaultySource::new(BackupDir::new(s.store.path()));
        let follower = Follower::open(
            Arc::clone(&source),
            DataDir::lock(&s.data).unwrap(),
            None,
            StaleReads::Serve,
            None,
        )
        .unwrap();
        (follower, source)
    }

    fn backup(s: &Setup, value: &[u8]) {
        s.master.put(b"k", value).unwrap();
        s.store.create(&s.master, "t").unwrap();
    }

    #[test]
    fn a_source_whose_restore_fails_keeps_the_old_data_and_no_partial() {
        let s = setup();
        let (f, source) = faulty_follower(&s);
        backup(&s, b"1");
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        backup(&s, b"2");
        FaultySource::set(&source.fail_restore, true);
        let PollOutcome::Failed(Error::Io { .. }) = f.poll() else {
            panic!("the restore failed")
        };
        let message = f.state().last_error.clone().unwrap();
        assert!(message.contains("the disk is failing"), "{message}");
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
        assert_eq!(gen_dirs(&s), ["gen-000001"]);
        FaultySource::set(&source.fail_restore, false);
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"2"[..]));
        assert_eq!(f.state().last_error, None);
    }

    #[test]
    fn a_backup_purged_between_list_and_restore_is_reported_as_purged() {
        let s = setup();
        let (f, source) = faulty_follower(&s);
        backup(&s, b"1");
        f.poll();
        FaultySource::set(&source.purge_on_restore, true);
        backup(&s, b"2");
        let PollOutcome::Failed(Error::BackupPurged { id: 2, .. }) = f.poll() else {
            panic!()
        };
        let first = f.state().last_error.clone().unwrap();
        assert!(
            first.contains("purged") && !first.contains("in a row"),
            "{first}"
        );
        backup(&s, b"3");
        let PollOutcome::Failed(Error::BackupPurged { id: 3, .. }) = f.poll() else {
            panic!()
        };
        let second = f.state().last_error.clone().unwrap();
        assert!(second.contains("2 restores in a row"), "{second}");
        assert!(second.contains("raise --keep-within"), "{second}");
        FaultySource::set(&source.purge_on_restore, false);
        backup(&s, b"4");
        assert!(matches!(f.poll(), PollOutcome::Applied(_)));
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn a_source_that_goes_away_keeps_the_data_serving_and_says_so() {
        let s = setup();
        let (f, source) = faulty_follower(&s);
        backup(&s, b"1");
        f.poll();
        FaultySource::set(&source.gone, true);
        assert!(matches!(f.poll(), PollOutcome::Failed(_)));
        assert!(!f.state().last_poll_ok);
        assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
        FaultySource::set(&source.gone, false);
        assert!(matches!(f.poll(), PollOutcome::UpToDate));
        assert!(f.state().last_poll_ok && f.state().last_error.is_none());
    }
}
