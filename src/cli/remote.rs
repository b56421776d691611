//! The commands only a running daemon answers: `info`, `position`, and `backup`
//! through the daemon that owns the database (SAVE), printed as in local
//! mode.

use super::target::Remote;
use std::path::Path;

use super::{emit, CliError};
use crate::resp::Reply;

/// `rkv info [SECTION…]`: the daemon's INFO, line by line.
pub(super) fn info(
    daemon: &mut Remote<'_>,
    section: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let mut args: Vec<&[u8]> = vec![b"INFO"];
    args.extend(section.iter().map(|s| s.as_bytes()));
    match daemon.client()?.call(&args)? {
        Reply::Bulk(Some(text)) => {
            for line in String::from_utf8_lossy(&text).lines() {
                emit(out, line)?;
            }
            Ok(())
        }
        other => Err(daemon.unexpected(&other)),
    }
}

/// `rkv position`: the position the daemon's data holds.
pub(super) fn position(
    daemon: &mut Remote<'_>,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    match daemon.client()?.call(&[b"RKV.POSITION"])? {
        Reply::Integer(n) => emit(out, &n.to_string()),
        other => Err(daemon.unexpected(&other)),
    }
}

/// `rkv backup` when a daemon owns the database: the daemon backs up (its
/// own backup directory must be the one asked for).
pub(super) fn backup(
    daemon: &mut Remote<'_>,
    backup_dir: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let addr = daemon.addr().clone();
    let client = daemon.client()?;
    let daemon_dir = client.info_field(Some("persistence"), "rkv_backup_dir")?;
    if let (Some(wanted), Some(theirs)) = (backup_dir, &daemon_dir) {
        let same = crate::daemon::resolve(wanted) == crate::daemon::resolve(theirs.as_ref());
        if !same {
            return Err(CliError::Usage(format!(
                "the daemon at {addr} backs up to {theirs}, not {}; drop --backup_dir or give \
                 that directory",
                wanted.display()
            )));
        }
    }
    client.call(&[b"SAVE"])?;
    let id = client.info_field(Some("persistence"), "rkv_last_backup_id")?;
    emit(
        out,
        &format!(
            "OK: backup {} is the newest in {}",
            id.unwrap_or_else(|| "?".into()),
            daemon_dir.unwrap_or_else(|| "the daemon's backup directory".into())
        ),
    )
}
