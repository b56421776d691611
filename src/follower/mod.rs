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

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backup::{
    now_ms, BackupDir, BackupInfo, BackupStore, Heartbeat, RestoreMode, RestoreStats,
};
use crate::db::{BlockCache, Db, OpenMode};
use crate::error::{Error, Result};
use crate::resp::Reply;
use crate::server::Backend;

pub use config::{main, FollowerArgs, FollowerConfig, StaleReads};
use generations::DataDir;

/// The generation being served.
pub struct Generation {
    /// The backup it was restored from.
    pub backup: BackupInfo,
    /// The database, open read-only.
    pub db: Arc<Db>,
}

/// A follower's replication state.
pub struct Follower {
    store: BackupDir,
    data: DataDir,
    serving: ArcSwapOption<Generation>,
    /// Generations swapped out but perhaps still read; removed from disk
    /// once no reader holds them.
    retired: Mutex<Vec<Arc<Generation>>>,
    state: Mutex<ApplyState>,
    max_staleness: Option<Duration>,
    stale_reads: StaleReads,
    write_lock: Mutex<()>,
    /// Shared by every generation: the SST files a new generation shares
    /// with the old one keep their cached blocks across the swap.
    cache: Option<BlockCache>,
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
    /// The master's newest heartbeat.
    heartbeat: Option<Heartbeat>,
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
    /// Something failed; the serving generation is unchanged.
    Failed(String),
}

impl Follower {
    /// Takes the data directory and starts serving its `current`
    /// generation, if there is one, at once.
    pub fn open(
        store: BackupDir,
        data: DataDir,
        max_staleness: Option<Duration>,
        stale_reads: StaleReads,
        cache: Option<BlockCache>,
    ) -> Result<Follower> {
        let follower = Follower {
            store,
            data,
            serving: ArcSwapOption::empty(),
            retired: Mutex::new(Vec::new()),
            state: Mutex::new(ApplyState::default()),
            max_staleness,
            stale_reads,
            write_lock: Mutex::new(()),
            cache,
        };
        if let Some((id, path)) = follower.data.current() {
            match follower.open_generation(id, &path) {
                Ok(generation) => {
                    tracing::info!("serving generation {id} from {}", path.display());
                    follower.serving.store(Some(Arc::new(generation)));
                }
                Err(e) => tracing::error!(
                    "cannot open the current generation {}: {e}; waiting for the next backup",
                    path.display()
                ),
            }
        }
        // Partials are crash leftovers; other generations are unused now.
        let keep: Vec<u32> = follower
            .serving
            .load()
            .iter()
            .map(|g| g.backup.id)
            .collect();
        follower.data.remove_except(&keep);
        Ok(follower)
    }

    /// Opens generation `id` at `path` read-only. Its backup's facts come
    /// from the record the apply left beside it, else from the store (which
    /// costs a BackupEngine open, and may have purged the backup).
    fn open_generation(&self, id: u32, path: &Path) -> Result<Generation> {
        let db = Db::open_with_cache(path, OpenMode::ReadOnly, self.cache.as_ref())?;
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
        })
    }

    /// The generation being served.
    pub fn serving(&self) -> Option<Arc<Generation>> {
        self.serving.load_full()
    }

    fn state(&self) -> MutexGuard<'_, ApplyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One step: apply the newest complete backup if it is newer than the
    /// one served.
    pub fn poll(&self) -> PollOutcome {
        // Listing meta/ says whether anything is new; only then is a
        // BackupEngine opened (it reads every meta file and lists every
        // shared file, which on NFS is not free every poll interval).
        let serving_id = self.serving.load().as_ref().map(|g| g.backup.id);
        let listed = self.store.newest_id().and_then(|newest| match newest {
            Some(id) if serving_id.is_none_or(|serving| id > serving) => {
                Ok((newest, self.store.list()?))
            }
            _ => Ok((newest, Vec::new())),
        });
        let heartbeat = self.store.read_heartbeat();
        let mut state = self.state();
        state.last_poll = Some(Instant::now());
        if heartbeat.is_some() {
            state.heartbeat = heartbeat;
        }
        let backups = match listed {
            Ok((newest_id, backups)) => {
                state.last_poll_ok = true;
                if newest_id.is_some() {
                    state.newest_seen = newest_id;
                }
                backups
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
                            "cannot read the backup directory: {message}; still serving"
                        );
                    }
                }
                state.last_error = Some(message.clone());
                return PollOutcome::Failed(message);
            }
        };
        let Some(newest) = backups.last().cloned() else {
            return PollOutcome::UpToDate;
        };
        if serving_id.is_some_and(|id| id >= newest.id) {
            return PollOutcome::UpToDate;
        }
        if let Some((id, retry_at, _)) = state.backoff {
            if id == newest.id && Instant::now() < retry_at {
                return PollOutcome::Waiting(id);
            }
        }
        state.applying = true;
        drop(state);

        let result = self.apply(&newest);
        let mut state = self.state();
        state.applying = false;
        match result {
            Ok(stats) => {
                state.applies_done += 1;
                state.last_apply = Some(stats.clone());
                state.backoff = None;
                state.last_error = None;
                drop(state);
                self.release_retired();
                PollOutcome::Applied(stats)
            }
            Err(e) => {
                let message = format!("apply backup {}: {e}", newest.id);
                state.failures += 1;
                state.last_error = Some(message.clone());
                if matches!(e, Error::BackupCorrupt { .. }) {
                    // Retry with backoff: a copy may still be arriving (NFS),
                    // and a newer backup is tried as soon as it appears.
                    let delay = match state.backoff {
                        Some((id, _, delay)) if id == newest.id => {
                            (delay * 2).min(Duration::from_secs(60))
                        }
                        _ => Duration::from_secs(1),
                    };
                    state.backoff = Some((newest.id, Instant::now() + delay, delay));
                    tracing::error!("{message}; serving the previous data, retrying in {delay:?}");
                } else {
                    // Purged during the restore, or an I/O error: the next
                    // poll starts over with the newest backup.
                    tracing::warn!("{message}; serving the previous data, will retry");
                }
                PollOutcome::Failed(message)
            }
        }
    }

    /// Applies backup `backup` as a new generation and serves it.
    fn apply(&self, backup: &BackupInfo) -> Result<RestoreStats> {
        let started = Instant::now();
        let base = self.serving.load_full();
        let partial = self
            .data
            .start(backup.id, base.as_ref().map(|g| g.db.path()))?;
        let linked = started.elapsed();
        let mut stats =
            self.store
                .restore(Some(backup.id), &partial, RestoreMode::KeepMatchingFiles)?;
        let restored = started.elapsed();
        write_generation_info(&partial, backup);
        // Check it opens and holds what the backup promises before it can
        // become `current`. RocksDB keeps paths, so it is opened where it
        // will stay: renamed to gen-N first, published after the check.
        let path = self.data.finish(backup.id, &partial)?;
        let opened = Db::open_with_cache(&path, OpenMode::ReadOnly, self.cache.as_ref());
        let db = match opened.and_then(|db| check(db, backup)) {
            Ok(db) => db,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        let opened = started.elapsed();
        self.data.publish(backup.id)?;
        tracing::debug!(
            "apply {}: link {linked:?}, restore {:?}, open and check {:?}, publish {:?}",
            backup.id,
            restored - linked,
            opened - restored,
            started.elapsed() - opened
        );
        let generation = Arc::new(Generation {
            backup: backup.clone(),
            db: Arc::new(db),
        });
        if let Some(old) = self.serving.swap(Some(generation)) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
        stats.duration = started.elapsed();
        tracing::info!(
            "applied backup {} (seq {}): {} files copied ({} bytes), {} kept, in {:?}",
            backup.id,
            backup.metadata.as_ref().map_or(0, |m| m.seq),
            stats.files_copied,
            stats.bytes_copied,
            stats.files_kept,
            stats.duration
        );
        Ok(stats)
    }

    /// Drops retired generations no reader holds and, when any went,
    /// removes every directory but the ones still in use.
    pub fn release_retired(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let before = retired.len();
        retired.retain(|g| Arc::strong_count(g) > 1);
        if retired.len() == before {
            return;
        }
        let mut keep: Vec<u32> = retired.iter().map(|g| g.backup.id).collect();
        keep.extend(self.serving.load().iter().map(|g| g.backup.id));
        if !self.state().applying {
            self.data.remove_except(&keep);
        }
    }

    /// How old the served data is: now minus the moment it was last known
    /// to be the master's whole state. That is the served backup's creation,
    /// or the master's latest heartbeat when the master has written nothing
    /// since that backup.
    pub fn staleness(&self) -> Option<Duration> {
        let generation = self.serving.load_full()?;
        let mut current_as_of = generation.backup.created_ms();
        let state = self.state();
        if let (Some(meta), Some(heartbeat)) = (&generation.backup.metadata, &state.heartbeat) {
            if heartbeat.seq <= meta.seq && heartbeat.master == meta.master {
                current_as_of = current_as_of.max(heartbeat.ms);
            }
        }
        Some(Duration::from_millis(
            now_ms().saturating_sub(current_as_of),
        ))
    }

    /// Whether the follower serves data within `--max-staleness`.
    pub fn healthy(&self) -> bool {
        match (self.serving.load().as_ref(), self.max_staleness) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(max)) => self.staleness().is_some_and(|s| s <= max),
        }
    }

    /// A one-line summary for systemd's STATUS.
    pub fn status_line(&self) -> String {
        match (self.serving(), self.staleness()) {
            (Some(g), Some(age)) => format!(
                "serving backup {} ({} old){}",
                g.backup.id,
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                if self.healthy() { "" } else { ", STALE" }
            ),
            _ => "waiting for the first backup".to_string(),
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

    fn reader(&self) -> std::result::Result<Arc<Db>, Reply> {
        let Some(generation) = self.serving.load_full() else {
            return Err(Reply::error(format!(
                "MASTERDOWN no backup applied yet: this follower is waiting for the first complete backup in {}",
                self.store.path().display()
            )));
        };
        if self.stale_reads == StaleReads::Refuse && !self.healthy() {
            let age = self.staleness().unwrap_or_default();
            let max = self.max_staleness.unwrap_or_default();
            return Err(Reply::error(format!(
                "MASTERDOWN the data is {} old, more than --max-staleness {}: the master has not \
                 published a newer backup",
                humantime::format_duration(Duration::from_millis(age.as_millis() as u64)),
                humantime::format_duration(max)
            )));
        }
        Ok(Arc::clone(&generation.db))
    }

    fn writer(&self) -> std::result::Result<Arc<Db>, Reply> {
        Err(Reply::error(
            "READONLY You can't write against a read only replica.",
        ))
    }

    fn write_lock(&self) -> &Mutex<()> {
        &self.write_lock
    }

    fn role(&self) -> Reply {
        let serving = self.serving.load();
        let master = serving
            .as_ref()
            .and_then(|g| g.backup.metadata.as_ref())
            .map(|m| m.master.clone())
            .unwrap_or_default();
        let host = master.split(':').next().unwrap_or_default().to_string();
        let seq = serving
            .as_ref()
            .and_then(|g| g.backup.metadata.as_ref())
            .map_or(0, |m| m.seq);
        let link = if self.state().last_poll_ok && serving.is_some() {
            "connected"
        } else {
            "connecting"
        };
        Reply::array(vec![
            Reply::bulk("slave"),
            Reply::bulk(host),
            Reply::Integer(0),
            Reply::bulk(link),
            Reply::Integer(seq as i64),
        ])
    }

    fn bgsave(&self) -> Reply {
        Reply::error("ERR a follower takes no backups: run BGSAVE on the master")
    }

    fn save(&self) -> Reply {
        self.bgsave()
    }

    fn lastsave(&self) -> i64 {
        self.serving
            .load()
            .as_ref()
            .map_or(0, |g| (g.backup.created_ms() / 1000) as i64)
    }

    fn info_sections(&self) -> Vec<(&'static str, Vec<(String, String)>)> {
        let state = self.state().clone();
        let serving = self.serving.load_full();
        let meta = serving.as_ref().and_then(|g| g.backup.metadata.clone());
        let kv = |k: &str, v: String| (k.to_string(), v);
        let ms = |d: Option<Duration>| d.map_or(-1, |d| d.as_millis() as i64).to_string();
        let master = meta.as_ref().map(|m| m.master.clone()).unwrap_or_default();
        let replication = vec![
            kv("role", "slave".into()),
            kv(
                "master_host",
                master.split(':').next().unwrap_or_default().into(),
            ),
            kv("master_port", "0".into()),
            kv(
                "master_link_status",
                if state.last_poll_ok { "up" } else { "down" }.into(),
            ),
            kv(
                "master_last_io_seconds_ago",
                state
                    .last_poll
                    .map_or(-1, |t| t.elapsed().as_secs() as i64)
                    .to_string(),
            ),
            kv(
                "master_sync_in_progress",
                u8::from(state.applying).to_string(),
            ),
            kv(
                "slave_repl_offset",
                meta.as_ref().map_or(0, |m| m.seq).to_string(),
            ),
            kv("slave_read_only", "1".into()),
            kv("rkv_master", master),
            kv("rkv_backup_dir", self.store.path().display().to_string()),
            kv(
                "rkv_applied_backup_id",
                serving.as_ref().map_or(0, |g| g.backup.id).to_string(),
            ),
            kv(
                "rkv_applied_created_ms",
                serving
                    .as_ref()
                    .map_or(0, |g| g.backup.created_ms())
                    .to_string(),
            ),
            kv(
                "rkv_applied_seq",
                meta.as_ref().map_or(0, |m| m.seq).to_string(),
            ),
            kv("rkv_staleness_ms", ms(self.staleness())),
            kv(
                "rkv_newest_backup_id",
                state.newest_seen.unwrap_or(0).to_string(),
            ),
            kv(
                "rkv_master_heartbeat_ms_ago",
                state
                    .heartbeat
                    .as_ref()
                    .map_or(-1, |h| now_ms().saturating_sub(h.ms) as i64)
                    .to_string(),
            ),
            kv(
                "rkv_last_poll_ms_ago",
                ms(state.last_poll.map(|t| t.elapsed())),
            ),
            kv(
                "rkv_last_apply_duration_ms",
                ms(state.last_apply.as_ref().map(|a| a.duration)),
            ),
            kv(
                "rkv_last_apply_bytes_copied",
                state
                    .last_apply
                    .as_ref()
                    .map_or(0, |a| a.bytes_copied)
                    .to_string(),
            ),
            kv(
                "rkv_last_apply_files_copied",
                state
                    .last_apply
                    .as_ref()
                    .map_or(0, |a| a.files_copied)
                    .to_string(),
            ),
            kv(
                "rkv_last_apply_files_kept",
                state
                    .last_apply
                    .as_ref()
                    .map_or(0, |a| a.files_kept)
                    .to_string(),
            ),
            kv("rkv_applies_done", state.applies_done.to_string()),
            kv("rkv_apply_failures", state.failures.to_string()),
            kv("rkv_last_error", state.last_error.unwrap_or_default()),
            kv("rkv_max_staleness_ms", ms(self.max_staleness)),
            kv("rkv_stale_reads", self.stale_reads.as_str().into()),
            kv("healthy", u8::from(self.healthy()).to_string()),
        ];
        let persistence = vec![
            kv("loading", "0".into()),
            kv("rdb_last_save_time", self.lastsave().to_string()),
        ];
        vec![("persistence", persistence), ("replication", replication)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let Err(Reply::Error(e)) = f.reader() else {
            panic!("stale reads must be refused")
        };
        assert!(
            e.starts_with("MASTERDOWN") && e.contains("max-staleness"),
            "{e}"
        );
        assert!(matches!(f.writer(), Err(Reply::Error(e)) if e.starts_with("READONLY")));
    }
}
