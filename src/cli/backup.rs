//! `rkv backup | restore | backups | verify`: the commands on a backup
//! directory.

use std::time::{Duration, SystemTime};

use super::progress::{Bars, Count};
use super::{emit, CliError};
use std::path::{Path, PathBuf};

use crate::backup::{
    master_label, restored_name, BackupDir, BackupInfo, BackupLocation, BackupSink, BackupSource,
    RestoreMode, S3Publisher, S3Reader, SharedName, StoreArgs,
};
use crate::db::{Db, OpenMode};
use crate::error::Error;
use crate::progress::{human, Amount, Meter};
use crate::tail::follow::{Follow, Until};

/// `rkv backup --backup-dir DIR`: backs the database at `db_path` up into
/// a backup directory.
pub(super) fn backup(
    db_path: &Path,
    backup_dir: Option<&Path>,
    quiet: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let backup_dir =
        backup_dir.ok_or_else(|| CliError::Usage("`backup` needs --backup-dir=DIR".to_string()))?;
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
    let mut bars = Bars::new(quiet);
    if bars.shown() {
        let total = backup_estimate(&db, backup_dir)?;
        bars.add("backup", total, Count::dir(backup_dir.to_path_buf()));
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

/// What `rkv restore` restores.
pub(super) struct Restore<'a> {
    pub backup_dir: &'a Path,
    pub store: &'a StoreArgs,
    pub backup_id: Option<u32>,
    pub at: Option<PointInTime>,
    pub seq: Option<u64>,
}

/// `rkv restore`: restores a backup into `db_path`, replacing what it holds.
pub(super) fn restore(
    db_path: &Path,
    req: &Restore,
    quiet: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let Restore {
        backup_dir,
        store,
        backup_id,
        at,
        seq,
    } = *req;
    if crate::follower::generations::DataDir::is_data_dir(db_path) {
        return Err(CliError::Usage(format!(
            "{} is an rkv-follower data directory; restore into another directory",
            db_path.display()
        )));
    }
    let mut cache = db_path.as_os_str().to_os_string();
    cache.push(".s3-download");
    let source = Source::open(backup_dir, store, PathBuf::from(cache))?;
    let mut bars = Bars::new(quiet);
    let listed = match at.is_some() || seq.is_some() || bars.shown() {
        true => source.store.list()?,
        false => Vec::new(),
    };
    let at = at.map(|at| at.resolve(SystemTime::now()));
    let chosen = match (at, seq) {
        (Some(at), _) => {
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
        (None, Some(n)) => {
            let picked = seq_or_before(&listed, n, backup_dir)?;
            emit(
                out,
                &format!(
                    "backup {} (sequence {}) is the newest at or before sequence {n}",
                    picked.id,
                    picked.metadata.as_ref().map_or(0, |m| m.seq)
                ),
            )?;
            Some(picked.id)
        }
        (None, None) => backup_id,
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
    )?;
    if source.store.log().is_none() {
        return match seq {
            Some(n) => replay_log(
                &*source.store,
                &listed_or_described(&source, &listed, stats.id)?,
                db_path,
                Until::Seq(n),
                out,
            ),
            None => Ok(()),
        };
    }
    let restored = listed_or_described(&source, &listed, stats.id)?;
    let until = match (at, seq) {
        (Some(at), _) => Until::Time(crate::backup::unix_ms(at)),
        (None, Some(n)) => Until::Seq(n),
        (None, None) => return log_past(&*source.store, &restored, out),
    };
    replay_log(&*source.store, &restored, db_path, until, out)
}

/// Backup `id`'s facts: from the listing made, or read from the store.
fn listed_or_described(
    source: &Source,
    listed: &[BackupInfo],
    id: u32,
) -> Result<BackupInfo, CliError> {
    match listed.iter().find(|b| b.id == id) {
        Some(info) => Ok(info.clone()),
        None => Ok(source.store.describe(id)?),
    }
}

/// After a restore of a backup alone: says so when the store's log holds
/// writes past it, and how to restore them too.
fn log_past(
    store: &dyn BackupSource,
    backup: &BackupInfo,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (Some(log), Some(meta)) = (store.log(), backup.metadata.as_ref()) else {
        return Ok(());
    };
    match crate::tail::store::range(log) {
        Ok(Some(range)) if range.last_seq.is_some_and(|last| last > meta.seq) => {
            let last = range.last_seq.unwrap_or_default();
            emit(
                out,
                &format!(
                    "note: the store's log holds writes past this backup (sequence {} to \
                     {last}): restore with --seq={last} to have them too",
                    meta.seq
                ),
            )
        }
        _ => Ok(()),
    }
}

/// After a restore to a point (`--at`, `--seq`): the write log the store
/// holds after `backup`, replayed into the restored database up to it.
fn replay_log(
    store: &dyn BackupSource,
    backup: &BackupInfo,
    db_path: &Path,
    until: Until,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (Some(log), Some(meta)) = (store.log(), backup.metadata.as_ref()) else {
        return match until {
            // The backup is the point, or there is no log to reach it.
            Until::Seq(n) if backup.metadata.as_ref().is_none_or(|m| m.seq != n) => {
                Err(CliError::Refused {
                    what: format!(
                        "the backup store keeps no write log after backup {}: the database \
                         holds the backup's writes, not those up to sequence {n}",
                        backup.id
                    ),
                    hint: "restore to a backup's own sequence number (see `rkv backups`)".into(),
                })
            }
            _ => Ok(()),
        };
    };
    let db = Db::open(
        db_path,
        OpenMode::ReadWrite {
            create_if_missing: false,
        },
    )?;
    let progress = Follow::new(meta.lineage().to_string()).replay(&db, log, until)?;
    let reached = db.latest_sequence_number();
    let cut = progress
        .last_ms
        .map(|ms| format!(", the last segment cut {}", rfc3339(unix_time(ms))))
        .unwrap_or_default();
    emit(
        out,
        &format!(
            "OK: replayed {} write batches of the log ({} segments) into {}: it holds the \
             writes up to sequence {reached}{cut}",
            progress.batches,
            progress.segments,
            db_path.display()
        ),
    )?;
    if progress.stopped {
        return Ok(());
    }
    // The log ended before the point: a gap, or the end of what was shipped.
    let gap = log
        .segments()?
        .into_iter()
        .find(|&first| first > reached + 1);
    match (gap, until) {
        (Some(after), _) => Err(CliError::Refused {
            what: format!(
                "the log has a gap after sequence {reached}: its next segment starts at {after} \
                 (the master's log jumped, or a segment was removed); the database holds the \
                 writes up to {reached}"
            ),
            hint: "restore a backup taken after the gap, or a point before it".into(),
        }),
        (None, Until::Seq(n)) if reached < n => Err(CliError::Refused {
            what: format!(
                "the log ends at sequence {reached}, before {n}: the database holds the writes \
                 up to {reached}"
            ),
            hint: format!("the master has not shipped sequence {n} yet, or never wrote it"),
        }),
        _ => Ok(()),
    }
}

/// A unix time in milliseconds, as a time.
fn unix_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The newest of `backups` (oldest first) at or before sequence `n`.
fn seq_or_before(backups: &[BackupInfo], n: u64, dir: &Path) -> Result<BackupInfo, CliError> {
    let seq = |b: &BackupInfo| b.metadata.as_ref().map(|m| m.seq);
    if let Some(picked) = backups
        .iter()
        .rev()
        .find(|b| seq(b).is_some_and(|s| s <= n))
    {
        return Ok(picked.clone());
    }
    match backups.iter().find_map(|b| seq(b).map(|s| (b.id, s))) {
        Some((id, s)) => Err(CliError::Refused {
            what: format!(
                "no retained backup is at or before sequence {n}: the oldest is backup {id}, at \
                 sequence {s}"
            ),
            hint: "see `rkv backups` for what is retained".into(),
        }),
        None => Err(Error::NoBackups {
            location: BackupLocation::Dir(dir.to_path_buf()),
        }
        .into()),
    }
}

/// `rkv backups`: lists the backups, or the one `--at` picks.
pub(super) fn backups(
    backup_dir: &Path,
    store: &StoreArgs,
    at: Option<PointInTime>,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let cache = std::env::temp_dir().join(format!("rkv-backups-{}", std::process::id()));
    let source = Source::open(backup_dir, store, cache)?;
    let backups = source.store.list()?;
    if backups.is_empty() {
        return Err(Error::NoBackups {
            location: BackupLocation::Dir(backup_dir.to_path_buf()),
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
        (false, at) => {
            for line in backups_table(&shown, now) {
                emit(out, &line)?;
            }
            // What a restore reaches between and after the backups, when
            // the store keeps a log.
            let log = match source.store.log() {
                Some(log) if !at => crate::tail::store::range(log)?,
                _ => None,
            };
            if let Some(log) = log {
                emit(out, "")?;
                emit(out, &super::status::log_line(Some(&log)))?;
            }
            Ok(())
        }
    }
}

/// `rkv verify`: checks a backup's files against its meta file.
pub(super) fn verify(
    backup_dir: &Path,
    store: &StoreArgs,
    backup_id: Option<u32>,
    quiet: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let cache = std::env::temp_dir().join(format!("rkv-verify-{}", std::process::id()));
    let source = Source::open(backup_dir, store, cache)?;
    let store = &source.store;
    let backups = store.list()?;
    let id = match backup_id {
        Some(id) => id,
        None => backups
            .last()
            .map(|b| b.id)
            .ok_or_else(|| Error::NoBackups {
                location: BackupLocation::Dir(backup_dir.to_path_buf()),
            })?,
    };
    let info = backups.iter().find(|b| b.id == id);
    let meter = Meter::default();
    let mut bars = Bars::new(quiet);
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

/// A backup store, and for an object store the local directory it
/// downloads into, removed when done. The commands read it; `rkv promote`
/// also writes its hand-over there, through [`Source::sink`].
pub(super) struct Source {
    pub(super) store: Box<dyn BackupSource>,
    location: BackupLocation,
    pub(super) cache: Option<PathBuf>,
}

impl Source {
    pub(super) fn open(raw: &Path, args: &StoreArgs, cache: PathBuf) -> Result<Source, CliError> {
        let location = args.location(raw).map_err(CliError::Usage)?;
        let (store, cache): (Box<dyn BackupSource>, _) = match &location {
            BackupLocation::Dir(path) => (Box::new(BackupDir::new(path)), None),
            BackupLocation::S3(s3) => (
                Box::new(S3Reader::new((**s3).clone(), BackupDir::new(&cache))?),
                Some(cache),
            ),
        };
        Ok(Source {
            store,
            location,
            cache,
        })
    }

    /// The store to write the hand-over into: the directory itself, or for
    /// an object store a publisher that writes `latest` and nothing else.
    pub(super) fn sink(&self) -> Result<Box<dyn BackupSink>, CliError> {
        Ok(match &self.location {
            BackupLocation::Dir(path) => Box::new(BackupDir::new(path)),
            BackupLocation::S3(s3) => {
                // Creating no backup, it publishes none.
                let cache = self.cache.clone().unwrap_or_else(std::env::temp_dir);
                let staging = BackupDir::new(cache.join("hand-over"));
                let bucket = crate::backup::s3::Bucket::new((**s3).clone())?;
                Box::new(S3Publisher::for_hand_over(bucket, staging)?)
            }
        })
    }

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
            location: BackupLocation::Dir(dir.to_path_buf()),
        }
        .into()),
    }
}

/// A time in RFC 3339, UTC, to the millisecond.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// One backup as `rkv backups --json` prints it.
pub(super) fn backup_json(b: &BackupInfo, now: SystemTime) -> serde_json::Value {
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
pub(super) fn shorten_age(age: &str) -> String {
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
