//! `rkv backup | restore | backups | verify`: the commands on a backup
//! directory.

use std::time::{Duration, SystemTime};

use super::progress::{Bars, Count};
use super::{emit, Cli, CliError, Command};
use std::path::{Path, PathBuf};

use crate::backup::{
    master_label, restored_name, BackupDir, BackupInfo, BackupLocation, BackupSink, BackupSource,
    Heartbeat, RestoreMode, S3Store, SharedName, StoreArgs,
};
use crate::db::{Db, OpenMode};
use crate::error::Error;
use crate::progress::{human, Amount, Meter};

/// Runs one of the backup directory commands.
pub(super) fn run(cli: &Cli, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    match &cli.command {
        Command::Backup { backup_dir } => {
            let db_path = cli.require_db("backup")?;
            let backup_dir = backup_dir
                .as_ref()
                .ok_or_else(|| CliError::Usage("`backup` needs --backup_dir=DIR".to_string()))?;
            let db = Db::open(
                db_path,
                OpenMode::ReadWrite {
                    create_if_missing: false,
                },
            )?;
            if let Ok(BackupLocation::S3(_)) = StoreArgs::default().location(backup_dir) {
                return Err(CliError::Usage(
                    "`rkv backup` writes to a backup directory; rkv-master publishes to an \
                     object store (or back up into a directory and restore from there)"
                        .to_string(),
                ));
            }
            let store = BackupDir::new(backup_dir);
            let mut bars = Bars::new(cli.quiet);
            if bars.shown() {
                let total = backup_estimate(&db, backup_dir)?;
                bars.add("backup", total, Count::dir(backup_dir.clone()));
            }
            let stats = bars.run(|| store.create(&db, &master_label(db_path)))?;
            let seq = stats.info.metadata.as_ref().map_or(0, |m| m.seq);
            emit(
                out,
                &format!(
                    "OK: backup {} created in {}: {} new files, {} copied, seq {seq}",
                    stats.info.id,
                    backup_dir.display(),
                    stats.files_copied,
                    human(stats.bytes_copied),
                ),
            )
        }
        Command::Restore {
            backup_dir,
            backup_id,
            store,
            at,
        } => {
            let db_path = cli.require_db("restore")?;
            if crate::follower::generations::DataDir::is_data_dir(db_path) {
                return Err(CliError::Usage(format!(
                    "{} is an rkv-follower data directory; restore into another directory",
                    db_path.display()
                )));
            }
            let mut cache = db_path.as_os_str().to_os_string();
            cache.push(".s3-download");
            let source = Source::open(backup_dir, store, PathBuf::from(cache))?;
            let mut bars = Bars::new(cli.quiet);
            let listed = match at.is_some() || bars.shown() {
                true => source.store.list()?,
                false => Vec::new(),
            };
            let chosen = match at {
                Some(at) => {
                    let at = at.resolve(SystemTime::now());
                    let picked = at_or_before(&listed, at, backup_dir)?;
                    emit(
                        out,
                        &format!(
                            "backup {} (created {}) is the newest at or before {}",
                            picked.id,
                            rfc3339(picked.created()),
                            rfc3339(at)
                        ),
                    )?;
                    Some(picked.id)
                }
                None => *backup_id,
            };
            let shown = match chosen {
                Some(id) => listed.iter().find(|b| b.id == id),
                None => listed.last(),
            };
            if let Some(info) = shown {
                let total = source.download_bar(&mut bars, info);
                let expected = source
                    .store
                    .files(&[info.id])?
                    .into_iter()
                    .map(|(path, size)| (restored_name(&path), size))
                    .collect();
                let restored = Count::Restore {
                    path: db_path.to_path_buf(),
                    expected,
                };
                bars.add("restore", total, restored);
            }
            let stats = bars.run(|| source.store.restore(chosen, db_path, RestoreMode::Full))?;
            emit(
                out,
                &format!(
                    "OK: restored backup {} into {}: {} files, {} copied",
                    stats.id,
                    db_path.display(),
                    stats.files_copied,
                    human(stats.bytes_copied),
                ),
            )
        }
        Command::Backups {
            backup_dir,
            store,
            at,
            json,
        } => {
            let cache = std::env::temp_dir().join(format!("rkv-backups-{}", std::process::id()));
            let backups = Source::open(backup_dir, store, cache)?.store.list()?;
            if backups.is_empty() {
                return Err(Error::NoBackups {
                    path: backup_dir.clone(),
                }
                .into());
            }
            let now = SystemTime::now();
            let shown = match at {
                Some(at) => vec![at_or_before(&backups, at.resolve(now), backup_dir)?],
                None => backups,
            };
            match (json, at.is_some()) {
                (true, true) => emit(out, &backup_json(&shown[0], now).to_string()),
                (true, false) => {
                    let all: Vec<_> = shown.iter().map(|b| backup_json(b, now)).collect();
                    emit(out, &serde_json::Value::Array(all).to_string())
                }
                (false, _) => {
                    for line in backups_table(&shown, now) {
                        emit(out, &line)?;
                    }
                    Ok(())
                }
            }
        }
        Command::Status {
            backup_dir,
            store,
            json,
        } => {
            let cache = std::env::temp_dir().join(format!("rkv-status-{}", std::process::id()));
            let source = Source::open(backup_dir, store, cache)?;
            let status = DirStatus::read(source.store.as_ref(), SystemTime::now())?;
            if *json {
                return emit(out, &status.json().to_string());
            }
            for line in status.lines() {
                emit(out, &line)?;
            }
            Ok(())
        }
        Command::Verify {
            backup_dir,
            backup_id,
            store,
        } => {
            let cache = std::env::temp_dir().join(format!("rkv-verify-{}", std::process::id()));
            let source = Source::open(backup_dir, store, cache)?;
            let store = &source.store;
            let backups = store.list()?;
            let id = match backup_id {
                Some(id) => *id,
                None => backups
                    .last()
                    .map(|b| b.id)
                    .ok_or_else(|| Error::NoBackups {
                        path: backup_dir.clone(),
                    })?,
            };
            let info = backups.iter().find(|b| b.id == id);
            let meter = Meter::default();
            let mut bars = Bars::new(cli.quiet);
            if let Some(info) = info {
                let total = source.download_bar(&mut bars, info);
                bars.add("verify", total, Count::Meter(&meter));
            }
            bars.run(|| store.verify(id, &meter))?;
            let detail = info
                .map(|b| format!(" ({} files, {})", b.files, human(b.size)))
                .unwrap_or_default();
            emit(out, &format!("OK: backup {id} verified{detail}"))
        }
        _ => unreachable!("backup::run is only called for backup commands"),
    }
}

/// A backup store, and for an object store the local directory it
/// downloads into, removed when done. The commands read it; `rkv promote`
/// also writes its hand-over there.
pub(super) struct Source {
    pub(super) store: Box<dyn BackupSink>,
    pub(super) cache: Option<PathBuf>,
}

impl Source {
    pub(super) fn open(raw: &Path, args: &StoreArgs, cache: PathBuf) -> Result<Source, CliError> {
        match args.location(raw).map_err(CliError::Usage)? {
            BackupLocation::Dir(path) => Ok(Source {
                store: Box::new(BackupDir::new(path)),
                cache: None,
            }),
            BackupLocation::S3(s3) => Ok(Source {
                store: Box::new(S3Store::reader(s3, BackupDir::new(&cache))?),
                cache: Some(cache),
            }),
        }
    }

    /// Adds a bar for the download of backup `info` when the store is an
    /// object store (the download lands in the cache); returns the
    /// backup's size, the total of every bar of the work.
    fn download_bar(&self, bars: &mut Bars, info: &BackupInfo) -> Amount {
        let total = Amount {
            bytes: info.size,
            files: u64::from(info.files),
        };
        if let Some(cache) = &self.cache {
            bars.add("download", total, Count::dir(cache.clone()));
        }
        total
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(cache) = &self.cache {
            let _ = std::fs::remove_dir_all(cache);
        }
    }
}

/// What `rkv status` reports of a backup store.
struct DirStatus {
    /// When it was read: ages are counted from here.
    now: SystemTime,
    location: String,
    /// The heartbeat, and how old it is on the master's clock.
    owner: Option<(Heartbeat, Duration)>,
    /// The loadable backups, oldest first.
    backups: Vec<BackupInfo>,
    files: usize,
    shared_bytes: u64,
    private_bytes: u64,
    /// Backups in the store that RocksDB cannot load, and why.
    unloadable: Vec<(u32, String)>,
}

impl DirStatus {
    fn read(store: &dyn BackupSource, now: SystemTime) -> Result<DirStatus, CliError> {
        let owner = store.read_heartbeat().map(|h| {
            let written = SystemTime::UNIX_EPOCH + Duration::from_millis(h.ms);
            let age = now.duration_since(written).unwrap_or_default();
            (h, age)
        });
        let backups = store.list()?;
        let ids: Vec<u32> = backups.iter().map(|b| b.id).collect();
        let sizes = store.files(&ids)?;
        let shared_bytes = sizes
            .iter()
            .filter(|(path, _)| path.starts_with("shared"))
            .map(|(_, size)| size)
            .sum();
        let total: u64 = sizes.values().sum();
        // Complete backups RocksDB cannot load: in the store, not listed.
        let newest = store.newest_id()?.unwrap_or(0);
        let oldest = backups.first().map_or(1, |b| b.id);
        let unloadable = (oldest.max(newest.saturating_sub(1000))..=newest)
            .filter(|id| *id > 0 && !ids.contains(id) && store.contains(*id))
            .map(|id| {
                let why = store
                    .find_damage(id)
                    .unwrap_or_else(|| "RocksDB cannot load it".to_string());
                (id, why)
            })
            .collect();
        Ok(DirStatus {
            now,
            location: store.location(),
            owner,
            files: sizes.len(),
            shared_bytes,
            private_bytes: total - shared_bytes,
            backups,
            unloadable,
        })
    }

    /// Whether the owner's lease is live: a heartbeat younger than the
    /// lease timeout (judged on the master's clock, as written).
    fn lease_live(age: Duration) -> bool {
        age < crate::master::lease::LEASE_TIMEOUT
    }

    fn lines(&self) -> Vec<String> {
        let ago = |d: Duration| {
            let d = Duration::from_millis(d.as_millis() as u64 / 100 * 100);
            shorten_age(&humantime::format_duration(d).to_string())
        };
        let mut lines = vec![format!("backup store: {}", self.location)];
        lines.push(match &self.owner {
            Some((h, age)) if h.handover => format!(
                "owner:        {}; handed over by rkv promote {} ago, not started yet",
                h.master,
                ago(*age),
            ),
            Some((h, age)) => format!(
                "owner:        {}; heartbeat {} ago (master's clock): lease {}",
                h.owner(),
                ago(*age),
                if Self::lease_live(*age) {
                    "live"
                } else {
                    "expired (the master is not running, or cannot write here)"
                }
            ),
            None => "owner:        none (no master has written a heartbeat)".to_string(),
        });
        if let Some((h, _)) = self
            .owner
            .as_ref()
            .filter(|(h, _)| !h.superseded.is_empty())
        {
            lines.push(format!(
                "superseded:   {} (replaced by promotions; refused here without --take-over)",
                h.superseded.join(", ")
            ));
        }
        match (self.backups.first(), self.backups.last()) {
            (Some(oldest), Some(newest)) => {
                let seq = newest.metadata.as_ref().map_or(0, |m| m.seq);
                let age = self
                    .now
                    .duration_since(newest.created())
                    .unwrap_or_default();
                lines.push(format!(
                    "newest:       backup {}, created {} ({} ago), seq {seq}",
                    newest.id,
                    humantime::format_rfc3339_seconds(newest.created()),
                    ago(age)
                ));
                lines.push(format!(
                    "retained:     {} backups, {} to {} ({} to {})",
                    self.backups.len(),
                    oldest.id,
                    newest.id,
                    humantime::format_rfc3339_seconds(oldest.created()),
                    humantime::format_rfc3339_seconds(newest.created()),
                ));
                lines.push(format!(
                    "size:         {} in {} files: {} shared, {} private",
                    human(self.shared_bytes + self.private_bytes),
                    self.files,
                    human(self.shared_bytes),
                    human(self.private_bytes)
                ));
            }
            _ => lines.push("newest:       no backup yet".to_string()),
        }
        if self.unloadable.is_empty() {
            lines.push("unloadable:   none".to_string());
        }
        for (id, why) in &self.unloadable {
            lines.push(format!("unloadable:   backup {id}: {why}"));
        }
        lines
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "backup_store": self.location,
            "owner": self.owner.as_ref().map(|(h, age)| serde_json::json!({
                "master": h.master,
                "pid": h.pid,
                "heartbeat_age_ms": age.as_millis() as u64,
                "lease_live": !h.handover && Self::lease_live(*age),
                "handed_over": h.handover,
                "superseded": h.superseded,
            })),
            "newest": self.backups.last().map(|b| backup_json(b, self.now)),
            "retained": {
                "count": self.backups.len(),
                "oldest_id": self.backups.first().map(|b| b.id),
                "newest_id": self.backups.last().map(|b| b.id),
                "files": self.files,
                "total_bytes": self.shared_bytes + self.private_bytes,
                "shared_bytes": self.shared_bytes,
                "private_bytes": self.private_bytes,
            },
            "unloadable": self.unloadable.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "why": why,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What a backup of `db` into `dir` will copy: the files BackupEngine
/// takes (after a flush), less the table and blob files the directory
/// already shares, matched by file number and size as their names in
/// `shared_checksum/` record them (`000009_s<session>_1476.sst`).
fn backup_estimate(db: &Db, dir: &Path) -> Result<Amount, CliError> {
    let shared: std::collections::HashSet<(u64, u64)> =
        std::fs::read_dir(dir.join("shared_checksum"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        SharedName::parse(&name).map(|n| (n.number, n.size))
                    })
                    .collect()
            })
            .unwrap_or_default();
    let live = db
        .rocksdb()
        .get_livefiles_storage_info(&rocksdb::LiveFilesStorageInfoOptions::new())
        .map_err(|e| Error::rocksdb("list the database's live files", e))?;
    let mut total = Amount::default();
    for file in live.iter() {
        let sharable = matches!(
            file.file_type(),
            rocksdb::FileType::TableFile | rocksdb::FileType::BlobFile
        );
        if !(sharable && shared.contains(&(file.file_number(), file.size()))) {
            total.bytes += file.size();
            total.files += 1;
        }
    }
    Ok(total)
}

/// A time for `--at`: a moment, or an age (that long before now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    /// An RFC 3339 time.
    At(SystemTime),
    /// That long ago.
    Ago(Duration),
}

impl PointInTime {
    /// Parses `2026-11-24T10:14:00Z` (RFC 3339; a time without a zone is
    /// UTC) or an age such as `15m` or `2h 30m`.
    pub fn parse(text: &str) -> Result<PointInTime, String> {
        if let Ok(at) = humantime::parse_rfc3339_weak(text) {
            return Ok(PointInTime::At(at));
        }
        humantime::parse_duration(text)
            .map(PointInTime::Ago)
            .map_err(|_| {
                format!(
                    "{text:?} is neither an RFC 3339 time (2026-11-24T10:14:00Z) nor an age \
                     (15m, 2h 30m)"
                )
            })
    }

    /// The moment meant, with an age counted back from `now`.
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            PointInTime::At(at) => at,
            PointInTime::Ago(age) => now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// The newest of `backups` (oldest first) created at or before `at`.
fn at_or_before(
    backups: &[BackupInfo],
    at: SystemTime,
    dir: &Path,
) -> Result<BackupInfo, CliError> {
    if let Some(picked) = backups.iter().rev().find(|b| b.created() <= at) {
        return Ok(picked.clone());
    }
    match backups.first() {
        Some(oldest) => Err(CliError::NoneAtOrBefore {
            at: rfc3339(at),
            oldest_id: oldest.id,
            oldest_created: rfc3339(oldest.created()),
        }),
        None => Err(Error::NoBackups {
            path: dir.to_path_buf(),
        }
        .into()),
    }
}

/// A time in RFC 3339, UTC, to the millisecond.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// One backup as `rkv backups --json` prints it.
fn backup_json(b: &BackupInfo, now: SystemTime) -> serde_json::Value {
    let age = now.duration_since(b.created()).unwrap_or_default();
    serde_json::json!({
        "id": b.id,
        "created": rfc3339(b.created()),
        "created_ms": b.created_ms(),
        "age_seconds": age.as_secs(),
        "size_bytes": b.size,
        "files": b.files,
        "seq": b.metadata.as_ref().map(|m| m.seq),
        "master": b.metadata.as_ref().map(|m| m.master.clone()),
    })
}

/// The `rkv backups` table, header first.
fn backups_table(backups: &[BackupInfo], now: SystemTime) -> Vec<String> {
    let mut lines = vec![format!(
        "{:>6}  {:<20}  {:>12}  {:>10}  {:>6}  {:>12}",
        "ID", "CREATED (UTC)", "AGE", "SIZE", "FILES", "SEQ"
    )];
    for b in backups {
        let created = humantime::format_rfc3339_seconds(b.created()).to_string();
        let age = now.duration_since(b.created()).unwrap_or_default();
        let age = humantime::format_duration(Duration::from_secs(age.as_secs())).to_string();
        let seq = b
            .metadata
            .as_ref()
            .map_or_else(|| "-".to_string(), |m| m.seq.to_string());
        lines.push(format!(
            "{:>6}  {:<20}  {:>12}  {:>10}  {:>6}  {:>12}",
            b.id,
            created,
            shorten_age(&age),
            human(b.size),
            b.files,
            seq
        ));
    }
    lines
}

/// Keeps the two largest units of a humantime duration ("1day 2h 3m 4s" → "1day 2h").
fn shorten_age(age: &str) -> String {
    age.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::AppMetadata;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_point_in_time_is_a_time_or_an_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let at = PointInTime::parse("1970-01-01T01:00:00Z").unwrap();
        assert_eq!(
            at.resolve(now),
            SystemTime::UNIX_EPOCH + Duration::from_secs(3600)
        );
        let ago = PointInTime::parse("15m").unwrap();
        assert_eq!(
            ago.resolve(now),
            SystemTime::UNIX_EPOCH + Duration::from_secs(9100)
        );
        let long_ago = PointInTime::parse("1day").unwrap().resolve(now);
        assert!(long_ago < SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert!(PointInTime::parse("before lunch").is_err());
    }

    #[test]
    fn table_shows_utc_time_age_and_seq() {
        let created_ms = 1_700_000_000_000;
        let backups = [
            BackupInfo {
                id: 3,
                timestamp: created_ms / 1000,
                size: 2048,
                files: 5,
                metadata: Some(AppMetadata {
                    v: 1,
                    seq: 42,
                    created_ms,
                    master: "h:/db".into(),
                    db_id: None,
                }),
            },
            BackupInfo {
                id: 4,
                timestamp: created_ms / 1000,
                size: 10,
                files: 1,
                metadata: None,
            },
        ];
        let now = UNIX_EPOCH + Duration::from_millis(created_ms + 3_725_000);
        let lines = backups_table(&backups, now);
        assert!(lines[0].contains("CREATED (UTC)"));
        assert!(lines[1].contains("2023-11-14T22:13:20Z"), "{}", lines[1]);
        assert!(lines[1].contains("1h 2m"), "{}", lines[1]);
        assert!(
            lines[1].contains("2.0 KiB") && lines[1].ends_with("42"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with('-'), "{}", lines[2]);
    }
}
