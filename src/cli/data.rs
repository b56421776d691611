//! `rkv put | get | delete | scan`: the key/value commands, written once
//! against a [`Target`]: the database directly, or the daemon that owns it.

use super::target::Target;
use super::{emit, Cli, CliError, Command};
use crate::db::{Entry, ScanRange};

/// An entry's deadline as `--show_deadline` prints it: RFC 3339 in UTC to
/// the millisecond, or `never`.
fn deadline(entry: &Entry) -> String {
    match entry.expires_at {
        Some(ms) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_millis(at).to_string()
        }
        None => "never".to_string(),
    }
}

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
        Command::Get { key, show_deadline } => {
            let raw = keys.decode(key)?;
            match target.get(&raw, *show_deadline)? {
                Some(entry) if *show_deadline => emit(
                    out,
                    &format!("{} : {}", values.encode(&entry.value), deadline(&entry)),
                ),
                Some(entry) => emit(out, &values.encode(&entry.value)),
                None => Err(CliError::KeyNotFound(key.clone())),
            }
        }
        Command::Scan {
            from,
            to,
            max_keys,
            show_deadline,
        } => {
            let range = ScanRange {
                from: from.as_deref().map(|k| keys.decode(k)).transpose()?,
                to: to.as_deref().map(|k| keys.decode(k)).transpose()?,
            };
            target.scan(&range, *max_keys, *show_deadline, &mut |key, entry| {
                let (key, value) = (keys.encode(key), values.encode(&entry.value));
                match show_deadline {
                    true => emit(out, &format!("{key} : {value} : {}", deadline(entry))),
                    false => emit(out, &format!("{key} : {value}")),
                }
            })
        }
        _ => Err(CliError::Usage(
            "only put, get, delete and scan are key/value commands".to_string(),
        )),
    }
}
