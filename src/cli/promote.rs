//! `rkv promote`: turns a stopped follower's data into a master's database,
//! the one command of a failover.
//!
//! Each step checks before it acts, and nothing is written where the old
//! data lives:
//!
//! 1. the follower is stopped (its data directory's lock is free) and holds
//!    a generation; the lock is kept until the end, so it cannot start
//!    meanwhile;
//! 2. with a backup directory: its master is not running (its lease is not
//!    renewed for [`LEASE_TIMEOUT`](crate::master::lease::LEASE_TIMEOUT)),
//!    and it holds no backup of this database newer than the generation
//!    (promoting would lose the writes in between); then the old master's
//!    lease term is waited out, after which a master still running cut off
//!    from the store acknowledges no write;
//! 3. the generation is copied into a new directory beside the target (SST
//!    files hard-linked where the filesystem allows: RocksDB never changes
//!    them), opened read-write, and renamed into place;
//! 4. the backup directory is handed over to the new master
//!    ([`lease::hand_over`]): it may start there at once, and the old
//!    master, superseded, is refused if it comes back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod copy;

use copy::{check_opens, copy_generation, publish, staging_path, Opened};

use super::backup::Source;
use super::{emit, CliError};
use crate::backup::{master_label, BackupInfo, BackupLocation, BackupSource, StoreArgs};
use crate::error::Error;
use crate::follower::generations::{DataDir, LockError};
use crate::master::lease::{self, Identity};
use crate::progress::human;

/// What `rkv promote` was asked.
pub(super) struct Request<'a> {
    /// The follower's data directory.
    pub data: &'a Path,
    /// The new master's database directory.
    pub db: &'a Path,
    /// The backup directory the old master wrote, if it survived.
    pub backup_dir: Option<&'a Path>,
    /// How to reach an object store.
    pub store: &'a StoreArgs,
    /// Hand over even though the old master renews its lease.
    pub fence_live_master: bool,
    /// Promote even though the backup directory holds newer backups.
    pub discard_newer_backups: bool,
}

/// Runs `rkv promote`.
pub(super) fn run(req: &Request, out: &mut dyn io::Write) -> Result<(), CliError> {
    let unit = systemd_unit(req.data);
    // Held to the end: the follower cannot start while its data is copied.
    let (_lock, generation, info) = stopped_follower(req, &unit, out)?;
    // The writes the data holds: its backup's, and the log's applied since.
    let seq =
        crate::db::Db::open(&generation, crate::db::OpenMode::ReadOnly)?.latest_sequence_number();
    check_target(req)?;
    let checked = match req.backup_dir {
        Some(dir) => {
            let store = open_store(dir, req.store, req.db)?;
            let held = check_store(&store, &info, seq, req, out)?;
            Some((store, held))
        }
        None => None,
    };
    emit(
        out,
        &format!(
            "promoting backup {} (created {}) and the log applied since, seq {seq}, from {}",
            info.id,
            humantime::format_rfc3339_seconds(info.created()),
            generation.display()
        ),
    )?;
    let opened = copy_and_open(&generation, req.db, out)?;
    if let Some((store, held)) = checked {
        hand_over(store, &held, &opened, req, out)?;
    }
    for line in next_steps(req, &unit) {
        emit(out, &line)?;
    }
    Ok(())
}

/// Takes the follower's lock (refused while it runs) and finds its
/// current generation and the backup that generation holds.
fn stopped_follower(
    req: &Request,
    unit: &str,
    out: &mut dyn io::Write,
) -> Result<(DataDir, PathBuf, BackupInfo), CliError> {
    if !DataDir::is_data_dir(req.data) {
        return Err(refused(
            format!(
                "{} is not an rkv-follower data directory (it has no `current` generation link)",
                req.data.display()
            ),
            "pass the follower's --data directory (RKV_DATA in /etc/rkv/follower-NAME.env)",
        ));
    }
    let data = DataDir::lock(req.data).map_err(|e| match e {
        LockError::Busy { pid, .. } => refused(
            format!(
                "the rkv-follower{} is running on {}: promote copies a stopped follower's data",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                req.data.display()
            ),
            &format!("stop it first: systemctl stop {unit}"),
        ),
        LockError::Io { .. } => CliError::Usage(e.to_string()),
    })?;
    emit(
        out,
        &format!("checked:  no rkv-follower runs on {}", req.data.display()),
    )?;
    let Some((_, generation)) = data.current() else {
        return Err(refused(
            format!("{} holds no complete generation", req.data.display()),
            "promote a follower that has applied a backup",
        ));
    };
    let info = crate::follower::read_generation_info(&generation).ok_or_else(|| {
        refused(
            format!(
                "{} has no readable {}: which backup it holds is unknown",
                generation.display(),
                crate::follower::GENERATION_INFO
            ),
            "promote another follower, or restore the newest backup with `rkv restore`",
        )
    })?;
    Ok((data, generation, info))
}

/// Checks the backup store: its master is not running (unless
/// `--fence-live-master`), and it holds nothing newer than `info`. Returns
/// what holds the store now, for the hand-over.
fn check_store(
    store: &Source,
    info: &BackupInfo,
    seq: u64,
    req: &Request,
    out: &mut dyn io::Write,
) -> Result<lease::Holder, CliError> {
    let held = lease::check_free(store.store.as_ref());
    match (&held.heartbeat, held.live) {
        (Some(h), true) if !req.fence_live_master => {
            return Err(refused(
                format!(
                    "the backup directory's master ({}) is running: it renewed its lease within \
                     {:?}",
                    h.owner(),
                    lease::LEASE_TIMEOUT
                ),
                &format!(
                    "stop the old master first (systemctl stop rkv-master on its host). If it \
                     cannot be reached, --fence-live-master hands the directory over anyway: it \
                     then stops backing up and answers writes with -READONLY, and the writes it \
                     took after backup {} are lost",
                    info.id
                ),
            ));
        }
        (Some(h), true) => emit(
            out,
            &format!(
                "warning:  the backup directory's master ({}) is running; --fence-live-master: \
                 it will be fenced",
                h.owner()
            ),
        )?,
        (Some(h), false) => emit(
            out,
            &format!(
                "checked:  the backup directory's master ({}) is not running (its lease was not \
                 renewed for {:?})",
                h.owner(),
                lease::LEASE_TIMEOUT
            ),
        )?,
        (None, _) => emit(out, "checked:  no master has written a heartbeat there")?,
    }
    check_newer_backups(store.store.as_ref(), info, seq, req)?;
    wait_out_term(&held, info, out)?;
    Ok(held)
}

/// Waits until the old master's lease term has run out since its heartbeat
/// was last seen to change: from then on, even if it still runs cut off
/// from the store, it acknowledges no write, so the promotion drops none
/// it acknowledges later. Says what the promoted database lacks.
fn wait_out_term(
    held: &lease::Holder,
    info: &BackupInfo,
    out: &mut dyn io::Write,
) -> Result<(), CliError> {
    let Some(heartbeat) = held.heartbeat.as_ref().filter(|_| !held.live) else {
        return Ok(());
    };
    let left = held.term_left();
    let lacks = format!(
        "writes it acknowledged after backup {} (created {}) are not in the promoted database",
        info.id,
        humantime::format_rfc3339_seconds(info.created())
    );
    match heartbeat.lease_term_ms {
        Some(term) if !left.is_zero() => {
            emit(
                out,
                &format!(
                    "waiting:  {:.1} s for the old master's lease term ({}) to run out: if it \
                     still runs cut off from the backup store, it acknowledges no write after \
                     that; {lacks}",
                    left.as_secs_f64(),
                    humantime::format_duration(std::time::Duration::from_millis(term))
                ),
            )?;
            std::thread::sleep(left);
        }
        Some(_) => emit(
            out,
            &format!("checked:  the old master's lease term has run out; {lacks}"),
        )?,
        None if !heartbeat.handover => emit(
            out,
            &format!(
                "warning:  the old master's heartbeat carries no lease term (an rkv-master from \
                 before terms): if it still runs cut off from the backup store, it may go on \
                 acknowledging writes this promotion drops; {lacks}"
            ),
        )?,
        None => {}
    }
    Ok(())
}

/// Copies `generation` beside `db`, checks the copy opens read-write and
/// renames it to `db`; a failure leaves nothing behind.
fn copy_and_open(
    generation: &Path,
    db: &Path,
    out: &mut dyn io::Write,
) -> Result<Opened, CliError> {
    let staged = staging_path(db);
    let result = copy_generation(generation, &staged).and_then(|copied| {
        let opened = check_opens(&staged)?;
        publish(&staged, db)?;
        Ok((copied, opened))
    });
    let (copied, opened) = result.inspect_err(|_| {
        let _ = fs::remove_dir_all(&staged);
    })?;
    emit(
        out,
        &format!(
            "copied:   {} files: {} hard-linked ({}), {} copied ({})",
            copied.linked_files + copied.copied_files,
            copied.linked_files,
            human(copied.linked_bytes),
            copied.copied_files,
            human(copied.copied_bytes)
        ),
    )?;
    emit(
        out,
        &format!(
            "checked:  {} opens read-write: database {}, seq {}",
            db.display(),
            opened.db_id.as_deref().unwrap_or("(no identity)"),
            opened.seq
        ),
    )?;
    Ok(opened)
}

/// Hands the store over to the master of the promoted database at
/// `req.db`; if that fails, removes the copy so promote can run again.
fn hand_over(
    store: Source,
    held: &lease::Holder,
    opened: &Opened,
    req: &Request,
    out: &mut dyn io::Write,
) -> Result<(), CliError> {
    let successor = Identity {
        label: master_label(req.db),
        db_id: opened.db_id.clone(),
    };
    let sink = store.sink()?;
    let handed = lease::hand_over(
        sink.as_ref(),
        &successor,
        opened.seq,
        held.heartbeat.as_ref(),
        req.fence_live_master,
    );
    let heartbeat = handed.map_err(|e| {
        let _ = fs::remove_dir_all(req.db);
        match e {
            Error::BackupDirLeased { owner, .. } => refused(
                format!(
                    "another master ({owner}) took the backup directory while the follower's \
                     data was copied (it started there, or another rkv promote handed the \
                     directory to it); nothing was handed over, and the copy was removed"
                ),
                "see `rkv status --backup_dir=…`: stop that master and run promote again, or \
                 let it be the master",
            ),
            other => other.into(),
        }
    })?;
    let superseded = if heartbeat.superseded.is_empty() {
        String::new()
    } else {
        format!(
            "; superseded (refused if started there): {}",
            heartbeat.superseded.join(", ")
        )
    };
    emit(
        out,
        &format!(
            "recorded: the backup directory {} is handed over to {}{superseded}",
            store.store.as_ref().location(),
            successor.label
        ),
    )
}

/// The backup store at `raw`; an object store reads through a directory
/// beside `db`, removed when the promotion ends.
fn open_store(raw: &Path, args: &StoreArgs, db: &Path) -> Result<Source, CliError> {
    let mut cache = db.as_os_str().to_os_string();
    cache.push(".promote-s3");
    let source = Source::open(raw, args, PathBuf::from(cache))?;
    if source.cache.is_none() {
        // A missing directory is an error here: a typo must not make the
        // hand-over land in a new, empty directory.
        source.store.list()?;
    }
    Ok(source)
}

/// Refuses when the store's newest backup holds writes the follower's data
/// (at sequence number `seq`: its backup's and the log's applied since)
/// does not, or is of another database: the promoted master would lack
/// what it holds.
fn check_newer_backups(
    store: &dyn BackupSource,
    info: &BackupInfo,
    seq: u64,
    req: &Request,
) -> Result<(), CliError> {
    let newest = match store.list() {
        Ok(backups) => backups.last().cloned(),
        Err(Error::NoBackups { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(newest) = newest else {
        return Ok(());
    };
    let lineage = |b: &BackupInfo| b.metadata.as_ref().map(|m| m.lineage().to_string());
    let newer = if lineage(&newest) != lineage(info) {
        Some(format!(
            "the backup directory's newest backup ({}, created {}) is of another database than \
             this follower's (backup {})",
            newest.id,
            humantime::format_rfc3339_seconds(newest.created()),
            info.id
        ))
    } else if newest
        .metadata
        .as_ref()
        .map_or(newest.id > info.id, |m| m.seq > seq)
    {
        Some(format!(
            "the backup directory holds backup {} (created {}), newer than this follower's \
             backup {}: promoting it loses the writes in between",
            newest.id,
            humantime::format_rfc3339_seconds(newest.created()),
            info.id
        ))
    } else {
        None
    };
    match newer {
        Some(what) if !req.discard_newer_backups => Err(refused(
            what,
            &format!(
                "promote a follower that holds backup {}'s writes (INFO replication: \
                 rkv_applied_seq at least {}), or pass --discard-newer-backups to promote this \
                 one anyway",
                newest.id,
                newest.metadata.as_ref().map_or(0, |m| m.seq)
            ),
        )),
        Some(what) => emit(
            &mut io::stderr(),
            &format!("warning:  {what}; --discard-newer-backups: promoting it anyway"),
        ),
        None => Ok(()),
    }
}

/// The new database directory must not hold anything (promote never
/// overwrites), nor lie inside the follower's data directory (which a
/// follower clears of what is not its own) or the backup directory.
fn check_target(req: &Request) -> Result<(), CliError> {
    let db = req.db;
    let local_backups = req.backup_dir.and_then(|b| match req.store.location(b) {
        Ok(BackupLocation::Dir(dir)) => Some(dir),
        _ => None,
    });
    for (outer, what) in [
        (
            Some(req.data.to_path_buf()),
            "the follower's data directory",
        ),
        (local_backups, "the backup directory"),
    ] {
        if let Some(outer) = outer.filter(|outer| lies_within(db, outer)) {
            return Err(refused(
                format!("{} is inside {what} {}", db.display(), outer.display()),
                "choose a --db directory of its own, e.g. /var/lib/rkv/master",
            ));
        }
    }
    match fs::read_dir(db).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(refused(
            format!(
                "{} exists and is not empty: promote never overwrites a directory",
                db.display()
            ),
            "choose a new --db directory",
        )),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("read {}", db.display()), e).into()),
    }
}

/// Whether `path` (which need not exist yet) is `outer` or lies inside it,
/// symbolic links resolved.
fn lies_within(path: &Path, outer: &Path) -> bool {
    let Ok(outer) = fs::canonicalize(outer) else {
        return false;
    };
    // Resolve the longest part of `path` that exists, then add the rest.
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(resolved) = fs::canonicalize(&existing) {
            break resolved;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = match parent.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => parent.to_path_buf(),
                };
            }
            _ => return false,
        }
    };
    let full = rest.iter().rev().fold(resolved, |p, name| p.join(name));
    full.starts_with(&outer)
}

/// The follower's systemd unit, guessed from the data directory's name
/// (`/var/lib/rkv/follower-NAME` is `rkv-follower@NAME`).
fn systemd_unit(data: &Path) -> String {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_prefix("follower-") {
        Some(instance) if !instance.is_empty() => format!("rkv-follower@{instance}"),
        _ => "rkv-follower@NAME".to_string(),
    }
}

/// How to start the new master, by hand and under systemd.
fn next_steps(req: &Request, unit: &str) -> Vec<String> {
    let db = fs::canonicalize(req.db).unwrap_or_else(|_| req.db.to_path_buf());
    let backup_dir = req.backup_dir.map(|b| match req.store.location(b) {
        Ok(BackupLocation::Dir(dir)) => fs::canonicalize(&dir).unwrap_or(dir).display().to_string(),
        _ => b.display().to_string(),
    });
    let store = backup_dir.as_deref().unwrap_or("NEW_BACKUP_DIR");
    let mut lines = vec![
        String::new(),
        format!("OK: {} is ready to serve as the master.", db.display()),
        "Start it on this host, with the old master's other flags (--listen, --interval, …):"
            .to_string(),
        format!("    rkv-master --db {} --backup-dir {store}", db.display()),
        "Under systemd:".to_string(),
        format!("    systemctl disable --now {unit}"),
        format!(
            "    set RKV_DB={} and RKV_BACKUP_DIR={store} in /etc/rkv/master.env",
            db.display()
        ),
        "    systemctl enable --now rkv-master".to_string(),
    ];
    match backup_dir {
        Some(_) => lines.push(
            "The other followers follow its backups as they come, with no restart.".to_string(),
        ),
        None => lines.push(
            "No --backup-dir was given: nothing was checked or recorded there. Give the new \
             master a new backup directory and point the followers at it."
                .to_string(),
        ),
    }
    lines
}

fn refused(what: String, hint: &str) -> CliError {
    CliError::Refused {
        what,
        hint: hint.to_string(),
    }
}
