//! `rkv status`: a backup store at a glance: its owning master and the age
//! of its lease, the newest backup, the retained range and its size, and
//! any backup that fails to load.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::backup::{backup_json, shorten_age, Source};
use super::{emit, CliError};
use crate::backup::{BackupInfo, BackupSource, Heartbeat, StoreArgs};
use crate::progress::human;
use crate::tail::store::{range, LogRange};

/// `rkv status`: the backup store at a glance.
pub(super) fn status(
    backup_dir: &Path,
    store: &StoreArgs,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let cache = std::env::temp_dir().join(format!("rkv-status-{}", std::process::id()));
    let source = Source::open(backup_dir, store, cache)?;
    let status = DirStatus::read(source.store.as_ref(), SystemTime::now())?;
    if json {
        return emit(out, &status.json().to_string());
    }
    for line in status.lines() {
        emit(out, &line)?;
    }
    Ok(())
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
    /// What the store's write log covers, when it keeps one.
    log: Option<LogRange>,
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
            .filter(|id| *id > 0 && !ids.contains(id) && store.contains(*id).unwrap_or(true))
            .map(|id| {
                let why = match store.find_damage(id) {
                    Ok(Some(damage)) => damage,
                    Ok(None) => "RocksDB cannot load it".to_string(),
                    Err(e) => format!("cannot tell: {e}"),
                };
                (id, why)
            })
            .collect();
        let log = match store.log() {
            Some(log) => range(log)?,
            None => None,
        };
        Ok(DirStatus {
            log,
            now,
            location: store.location().to_string(),
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
        lines.push(log_line(self.log.as_ref()));
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
            "log": self.log.as_ref().map(|l| serde_json::json!({
                "segments": l.segments,
                "first_seq": l.first_seq,
                "last_seq": l.last_seq,
                "first_ms": l.first_ms,
                "last_ms": l.last_ms,
            })),
            "unloadable": self.unloadable.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "why": why,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What a store's write log covers, in one line for `rkv status` and
/// `rkv backups`.
pub(super) fn log_line(log: Option<&LogRange>) -> String {
    let at = |ms: Option<u64>| {
        ms.map_or_else(
            || "?".to_string(),
            |ms| {
                let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                humantime::format_rfc3339_millis(t).to_string()
            },
        )
    };
    match log {
        Some(log) => format!(
            "log:          {} segments, seq {} to {} (cut {} to {}): `rkv restore --seq` \
             or `--at` reaches any point from the oldest backup to its end",
            log.segments,
            log.first_seq,
            log.last_seq
                .map_or_else(|| "?".to_string(), |s| s.to_string()),
            at(log.first_ms),
            at(log.last_ms),
        ),
        None => "log:          none (followers follow backups alone)".to_string(),
    }
}
