//! `rkv put | get | delete | scan`: the key/value commands, on a database
//! directory opened directly.

use std::path::Path;

use super::{emit, Cli, CliError, Command};
use crate::db::{Db, OpenMode, ScanRange};
use crate::follower::generations::DataDir;

/// Runs one of the key/value commands.
pub(super) fn run(cli: &Cli, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let (keys, values) = (cli.key_encoding(), cli.value_encoding());
    // Decode every argument before opening anything, so a typo costs nothing.
    match &cli.command {
        Command::Put { key, value } => {
            let (key, value) = (keys.decode(key)?, values.decode(value)?);
            let db = open_for_writing(cli, "put")?;
            db.put(&key, &value)?;
            emit(out, "OK")
        }
        Command::Delete { key } => {
            let key = keys.decode(key)?;
            let db = open_for_writing(cli, "delete")?;
            db.delete(&key)?;
            emit(out, "OK")
        }
        Command::Get { key } => {
            let raw = keys.decode(key)?;
            let db = open_for_reading(cli.require_db("get")?)?;
            match db.get(&raw)? {
                Some(value) => emit(out, &values.encode(&value)),
                None => Err(CliError::KeyNotFound(key.clone())),
            }
        }
        Command::Scan { from, to, max_keys } => {
            let range = ScanRange {
                from: from.as_deref().map(|k| keys.decode(k)).transpose()?,
                to: to.as_deref().map(|k| keys.decode(k)).transpose()?,
            };
            let db = open_for_reading(cli.require_db("scan")?)?;
            for (count, entry) in db.iter(&range).enumerate() {
                if max_keys.is_some_and(|max| count >= max) {
                    break;
                }
                let (key, value) = entry?;
                emit(
                    out,
                    &format!("{} : {}", keys.encode(&key), values.encode(&value)),
                )?;
            }
            Ok(())
        }
        _ => unreachable!("data::run is only called for key/value commands"),
    }
}

fn open_for_writing(cli: &Cli, command: &str) -> Result<Db, CliError> {
    let path = cli.require_db(command)?;
    if DataDir::is_data_dir(path) {
        return Err(CliError::FollowerDataDir(path.to_path_buf()));
    }
    let mode = OpenMode::ReadWrite {
        create_if_missing: cli.create_if_missing,
    };
    Ok(Db::open(path, mode)?)
}

/// Opens a database directory read-only; for a follower's data directory,
/// the generation its `current` names.
pub(super) fn open_for_reading(path: &Path) -> Result<Db, CliError> {
    if DataDir::is_data_dir(path) {
        let Some((_, generation)) = DataDir::unlocked(path).current() else {
            return Err(crate::Error::DbNotFound {
                path: path.join("current"),
            }
            .into());
        };
        return Ok(Db::open(&generation, OpenMode::ReadOnly)?);
    }
    Ok(Db::open(path, OpenMode::ReadOnly)?)
}
