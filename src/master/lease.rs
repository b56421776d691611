//! The master's hold on its backup directory: one master per directory,
//! whichever hosts they run on.
//!
//! Two masters writing one directory delete each other's files and make
//! followers flip between two datasets. A master therefore claims the
//! directory before its first backup, in three steps:
//!
//! 1. a lock file (`flock`), which refuses a second master at once on the
//!    same host, or on a shared filesystem whose locks work across hosts;
//! 2. the heartbeat as a lease: it names the master and carries a token; a
//!    heartbeat of another master that changes while this one watches (on
//!    this host's clock, so skew does not matter) means that master is
//!    alive, and this one refuses to start;
//! 3. the lineage: a directory whose newest backup is of another database
//!    is refused unless the operator passes `--take-over` (a promotion).
//!
//! Once running, the master checks the token before each backup and at
//! each heartbeat; finding another's, it stops backing up (it is fenced).

use std::fs::File;
use std::time::{Duration, Instant};

use crate::backup::{AppMetadata, BackupInfo, BackupSink, Heartbeat};
use crate::error::{Error, Result};

/// How long a claim watches another master's heartbeat for a change: three
/// heartbeat periods, so a live master renews at least twice meanwhile.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who a master is: what its backups and heartbeats say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `<host>:<db path>`.
    pub label: String,
    /// The database's identity (see [`crate::backup::AppMetadata::db_id`]).
    pub db_id: Option<String>,
}

impl Identity {
    /// The database this master serves, as backups record it.
    pub fn lineage(&self) -> &str {
        self.db_id.as_deref().unwrap_or(&self.label)
    }

    /// Whether a backup with `meta` is of this master's database: the same
    /// RocksDB identity, or for backups that predate it, the same label.
    pub fn made(&self, meta: &AppMetadata) -> bool {
        match (&self.db_id, &meta.db_id) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => meta.master == self.label,
        }
    }

    /// Whether `heartbeat` was written by a run of this master.
    fn wrote(&self, heartbeat: &Heartbeat) -> bool {
        heartbeat.master == self.label && heartbeat.lineage() == self.lineage()
    }

    fn describe(&self) -> String {
        match &self.db_id {
            Some(id) => format!("database {id} at {}", self.label),
            None => self.label.clone(),
        }
    }
}

/// A held claim: the lock (while the filesystem has working locks) and the
/// token this run writes into its heartbeats.
#[derive(Debug)]
pub struct Claim {
    /// Held for the master's lifetime: the lock lives with it.
    _lock: Option<File>,
    /// This run's token.
    pub token: String,
    /// The lineage this master took over, when it took one over.
    pub took_over: Option<String>,
}

/// Claims `store` for the master `me`; `newest` is the store's newest
/// backup. `take_over` allows a directory whose newest backup is of another
/// database (never one another live master holds).
pub fn claim(
    store: &dyn BackupSink,
    me: &Identity,
    newest: Option<&BackupInfo>,
    take_over: bool,
) -> Result<Claim> {
    let lock = store.lock_for_master().map_err(|e| match e {
        Error::BackupDirLocked { path, .. } => Error::BackupDirLocked {
            path,
            owner: store.read_heartbeat().map(|h| h.owner()),
        },
        other => other,
    })?;

    if let Some(seen) = store.read_heartbeat().filter(|h| !me.wrote(h)) {
        // Another master wrote the heartbeat. Alive, it rewrites it every
        // second: watch on this host's clock, never compare timestamps.
        let started = Instant::now();
        while started.elapsed() < LEASE_TIMEOUT {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(now) = store.read_heartbeat().filter(|h| *h != seen) {
                return Err(Error::BackupDirLeased {
                    path: store.location().into(),
                    owner: now.owner(),
                });
            }
        }
        tracing::warn!(
            previous = %seen.owner(),
            "the backup directory's heartbeat names another master, which has not renewed it \
             for {LEASE_TIMEOUT:?}: it is not running"
        );
    }

    let mut took_over = None;
    if let Some(meta) = newest.and_then(|b| b.metadata.as_ref()) {
        if !me.made(meta) {
            let theirs = match &meta.db_id {
                Some(id) => format!("database {id} at {}", meta.master),
                None => meta.master.clone(),
            };
            if !take_over {
                return Err(Error::ForeignBackups {
                    path: store.location().into(),
                    id: newest.map_or(0, |b| b.id),
                    theirs,
                    ours: me.describe(),
                });
            }
            tracing::warn!(
                previous = %theirs,
                "--take-over: this master's database becomes the source of the backup directory \
                 {}; followers switch to it with its first backup",
                store.location()
            );
            took_over = Some(theirs);
        }
    }
    Ok(Claim {
        _lock: lock,
        token: new_token(),
        took_over,
    })
}

/// A token unique to this run: host, pid, and the start time in nanoseconds.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{}-{nanos:x}",
        crate::backup::master_label(std::path::Path::new("/")),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupDir;

    fn me(label: &str, id: &str) -> Identity {
        Identity {
            label: label.into(),
            db_id: Some(id.into()),
        }
    }

    fn backup(label: &str, id: Option<&str>) -> BackupInfo {
        BackupInfo {
            id: 7,
            timestamp: 0,
            size: 0,
            files: 0,
            metadata: Some(AppMetadata {
                v: 1,
                seq: 1,
                created_ms: 0,
                master: label.into(),
                db_id: id.map(Into::into),
            }),
        }
    }

    #[test]
    fn backups_of_another_database_need_take_over() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BackupDir::new(tmp.path());
        let a = me("h:/a", "A");
        claim(
            &store as &dyn BackupSink,
            &a,
            Some(&backup("h:/a", Some("A"))),
            false,
        )
        .unwrap();
        // Same path, new database: another lineage.
        let err = claim(
            &store as &dyn BackupSink,
            &a,
            Some(&backup("h:/a", Some("B"))),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, Error::ForeignBackups { id: 7, .. }), "{err}");
        let claimed = claim(
            &store as &dyn BackupSink,
            &a,
            Some(&backup("h:/a", Some("B"))),
            true,
        )
        .unwrap();
        assert!(claimed.took_over.as_deref().unwrap().contains('B'));
        drop(claimed);
        // Backups from before db ids: the label decides.
        claim(
            &store as &dyn BackupSink,
            &a,
            Some(&backup("h:/a", None)),
            false,
        )
        .unwrap();
        assert!(claim(
            &store as &dyn BackupSink,
            &a,
            Some(&backup("h:/b", None)),
            false
        )
        .is_err());
    }

    #[test]
    fn a_held_lock_refuses_a_second_master() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BackupDir::new(tmp.path());
        let first = claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap();
        let err = claim(&store as &dyn BackupSink, &me("h:/b", "B"), None, false).unwrap_err();
        assert!(matches!(err, Error::BackupDirLocked { .. }), "{err}");
        drop(first);
        claim(&store as &dyn BackupSink, &me("h:/b", "B"), None, false).unwrap();
    }

    #[test]
    fn a_renewed_heartbeat_of_another_master_refuses_even_without_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BackupDir::new(tmp.path());
        let heartbeat = |ms| Heartbeat {
            v: 1,
            seq: 0,
            ms,
            master: "other:/db".into(),
            db_id: Some("O".into()),
            token: Some("t".into()),
            pid: Some(1),
            keep_within_ms: None,
        };
        store.write_heartbeat(&heartbeat(1)).unwrap();
        let renewer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for ms in 2..30 {
                    std::thread::sleep(Duration::from_millis(100));
                    store.write_heartbeat(&heartbeat(ms)).unwrap();
                }
            })
        };
        let err = claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap_err();
        assert!(matches!(err, Error::BackupDirLeased { .. }), "{err}");
        renewer.join().unwrap();
        // It stopped renewing: after the timeout the directory is free.
        claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap();
    }
}
