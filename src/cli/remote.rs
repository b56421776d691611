//! The CLI through a running daemon: `put`, `get`, `delete`, `scan`, `info`
//! and `backup` sent over RESP, printed exactly as in local mode.

use super::{daemon_password, emit, Cli, CliError, Command};
use crate::client::{Client, ClientError};
use crate::resp::Reply;
use crate::server::ListenAddr;

/// How many entries one `RKV.SCAN` round trip fetches.
const SCAN_BATCH: usize = 1000;

/// Runs the command against the daemon at `addr`.
pub(super) fn run(
    cli: &Cli,
    addr: &ListenAddr,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let (keys, values) = (cli.key_encoding(), cli.value_encoding());
    // Decode every argument before connecting, as in local mode.
    let command: Vec<Vec<u8>> = match &cli.command {
        Command::Put { key, value } => {
            vec![b"SET".to_vec(), keys.decode(key)?, values.decode(value)?]
        }
        Command::Get { key } => vec![b"GET".to_vec(), keys.decode(key)?],
        Command::Delete { key } => vec![b"DEL".to_vec(), keys.decode(key)?],
        Command::Info { section } => {
            let mut args = vec![b"INFO".to_vec()];
            args.extend(section.iter().map(|s| s.as_bytes().to_vec()));
            args
        }
        Command::Backup { .. } => vec![b"SAVE".to_vec()],
        Command::Scan { .. } => Vec::new(),
        _ => unreachable!("only routable commands reach a daemon"),
    };
    let password = daemon_password(cli)?;
    let mut client = Client::connect(addr, password.as_deref())?;
    let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
    match &cli.command {
        Command::Put { .. } | Command::Delete { .. } => {
            client.call(&args)?;
            emit(out, "OK")
        }
        Command::Get { key } => match client.call(&args)? {
            Reply::Bulk(Some(value)) => emit(out, &values.encode(&value)),
            Reply::Bulk(None) => Err(CliError::KeyNotFound(key.clone())),
            other => Err(unexpected(addr, &other)),
        },
        Command::Info { .. } => match client.call(&args)? {
            Reply::Bulk(Some(text)) => {
                for line in String::from_utf8_lossy(&text).lines() {
                    emit(out, line)?;
                }
                Ok(())
            }
            other => Err(unexpected(addr, &other)),
        },
        Command::Backup { backup_dir } => {
            let daemon_dir = client.info_field(Some("persistence"), "rkv_backup_dir")?;
            if let (Some(wanted), Some(theirs)) = (backup_dir, &daemon_dir) {
                let same =
                    crate::daemon::resolve(wanted) == crate::daemon::resolve(theirs.as_ref());
                if !same {
                    return Err(CliError::Usage(format!(
                        "the daemon at {addr} backs up to {theirs}, not {}; drop --backup_dir or \
                         give that directory",
                        wanted.display()
                    )));
                }
            }
            client.call(&args)?;
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
        Command::Scan { from, to, max_keys } => {
            let mut from = from
                .as_deref()
                .map(|k| keys.decode(k))
                .transpose()?
                .unwrap_or_default();
            let to = to
                .as_deref()
                .map(|k| keys.decode(k))
                .transpose()?
                .unwrap_or_default();
            let mut left = max_keys.unwrap_or(usize::MAX);
            while left > 0 {
                let count = left.min(SCAN_BATCH).to_string();
                let reply = client.call(&[b"RKV.SCAN", &from, &to, count.as_bytes()])?;
                let Reply::Array(Some(parts)) = reply else {
                    return Err(unexpected(addr, &reply));
                };
                let [next, Reply::Array(Some(entries))] = parts.as_slice() else {
                    return Err(unexpected(addr, &Reply::Array(Some(parts))));
                };
                for pair in entries.chunks(2) {
                    if let [Reply::Bulk(Some(k)), Reply::Bulk(Some(v))] = pair {
                        emit(out, &format!("{} : {}", keys.encode(k), values.encode(v)))?;
                        left -= 1;
                    }
                }
                match next {
                    Reply::Bulk(Some(next)) => from = next.clone(),
                    _ => break,
                }
            }
            Ok(())
        }
        _ => unreachable!("only routable commands reach a daemon"),
    }
}

fn unexpected(addr: &ListenAddr, reply: &Reply) -> CliError {
    CliError::Remote(ClientError::Protocol {
        addr: addr.to_string(),
        detail: format!("unexpected reply {reply:?}"),
    })
}
