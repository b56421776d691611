//! `rkv put | get | delete | scan`: the key/value commands, written once
//! against a [`Target`]: the database directly, or the daemon that owns it.

use super::target::Target;
use super::{emit, Cli, CliError, Command};
use crate::db::ScanRange;

/// Runs one of the key/value commands against `target`.
pub(super) fn run(
    cli: &Cli,
    target: &mut dyn Target,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (keys, values) = (cli.key_encoding(), cli.value_encoding());
    // Every argument is decoded before the target is opened or reached, so
    // a typo costs nothing.
    match &cli.command {
        Command::Put { key, value } => {
            let (key, value) = (keys.decode(key)?, values.decode(value)?);
            target.put(&key, &value)?;
            emit(out, "OK")
        }
        Command::Delete { key } => {
            let key = keys.decode(key)?;
            target.delete(&key)?;
            emit(out, "OK")
        }
        Command::Get { key } => {
            let raw = keys.decode(key)?;
            match target.get(&raw)? {
                Some(value) => emit(out, &values.encode(&value)),
                None => Err(CliError::KeyNotFound(key.clone())),
            }
        }
        Command::Scan { from, to, max_keys } => {
            let range = ScanRange {
                from: from.as_deref().map(|k| keys.decode(k)).transpose()?,
                to: to.as_deref().map(|k| keys.decode(k)).transpose()?,
            };
            target.scan(&range, *max_keys, &mut |key, value| {
                emit(
                    out,
                    &format!("{} : {}", keys.encode(key), values.encode(value)),
                )
            })
        }
        _ => Err(CliError::Usage(
            "only put, get, delete and scan are key/value commands".to_string(),
        )),
    }
}
