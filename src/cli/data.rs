//! `rkv put | get | delete | scan`: the key/value commands, written once
//! against a [`Target`]: the database directly, or the daemon that owns it.

use super::target::Target;
use super::{emit, Cli, CliError};
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

// Every argument is decoded before the target is opened or reached, so a
// typo costs nothing.

/// `rkv put KEY VALUE`.
pub(super) fn put(
    cli: &Cli,
    target: &mut dyn Target,
    key: &str,
    value: &str,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (key, value) = (
        cli.key_encoding().decode(key)?,
        cli.value_encoding().decode(value)?,
    );
    target.put(&key, &value)?;
    emit(out, "OK")
}

/// `rkv delete KEY`.
pub(super) fn delete(
    cli: &Cli,
    target: &mut dyn Target,
    key: &str,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let key = cli.key_encoding().decode(key)?;
    target.delete(&key)?;
    emit(out, "OK")
}

/// `rkv get KEY [--show_deadline]`.
pub(super) fn get(
    cli: &Cli,
    target: &mut dyn Target,
    key: &str,
    show_deadline: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let values = cli.value_encoding();
    let raw = cli.key_encoding().decode(key)?;
    match target.get(&raw, show_deadline)? {
        Some(entry) if show_deadline => emit(
            out,
            &format!("{} : {}", values.encode(&entry.value), deadline(&entry)),
        ),
        Some(entry) => emit(out, &values.encode(&entry.value)),
        None => Err(CliError::KeyNotFound(key.to_string())),
    }
}

/// What `rkv scan` prints.
pub(super) struct Scan<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub max_keys: Option<usize>,
    pub show_deadline: bool,
}

/// `rkv scan [--from KEY] [--to KEY] [--max_keys N] [--show_deadline]`.
pub(super) fn scan(
    cli: &Cli,
    target: &mut dyn Target,
    scan: &Scan,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (keys, values) = (cli.key_encoding(), cli.value_encoding());
    let range = ScanRange {
        from: scan.from.map(|k| keys.decode(k)).transpose()?,
        to: scan.to.map(|k| keys.decode(k)).transpose()?,
    };
    let show_deadline = scan.show_deadline;
    target.scan(&range, scan.max_keys, show_deadline, &mut |key, entry| {
        let (key, value) = (keys.encode(key), values.encode(&entry.value));
        match show_deadline {
            true => emit(out, &format!("{key} : {value} : {}", deadline(entry))),
            false => emit(out, &format!("{key} : {value}")),
        }
    })
}
