//! Where the key/value commands act: a database directory opened directly,
//! or the daemon that owns it (or `--connect`), behind one interface, so
//! each command is written once.

use std::path::Path;

use super::{daemon_password, Cli, CliError};
use crate::client::{Access, Client, ClientError, ClientTls};
use crate::db::{now_ms, Db, Entry, OpenMode, ScanRange};
use crate::follower::generations::DataDir;
use crate::resp::Reply;
use crate::server::ListenAddr;

/// How many entries one `RKV.SCAN` round trip fetches.
const SCAN_BATCH: usize = 1000;

/// Called for each entry a scan yields: its key, and its value and deadline.
pub(super) type Each<'a> = dyn FnMut(&[u8], &Entry) -> Result<(), CliError> + 'a;

/// What the key/value commands need of where they act. Nothing is opened
/// or connected before the first call, so a bad argument costs nothing.
pub(super) trait Target {
    /// Stores `value` under `key`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), CliError>;
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<(), CliError>;
    /// The live entry under `key`, if any; its deadline only when
    /// `deadline` is asked for.
    fn get(&mut self, key: &[u8], deadline: bool) -> Result<Option<Entry>, CliError>;
    /// Calls `each` for the live entries of `range` in key order, at most
    /// `max`; their deadlines only when `deadlines` are asked for.
    fn scan(
        &mut self,
        range: &ScanRange,
        max: Option<usize>,
        deadlines: bool,
        each: &mut Each<'_>,
    ) -> Result<(), CliError>;
}

/// A database directory opened by the CLI itself.
pub(super) struct Local<'a> {
    cli: &'a Cli,
    command: &'static str,
    db: Option<Db>,
}

impl<'a> Local<'a> {
    pub(super) fn new(cli: &'a Cli, command: &'static str) -> Local<'a> {
        Local {
            cli,
            command,
            db: None,
        }
    }

    fn writable(&mut self) -> Result<&Db, CliError> {
        if self.db.is_none() {
            let path = self.cli.require_db(self.command)?;
            if DataDir::is_data_dir(path) {
                return Err(CliError::FollowerDataDir(path.to_path_buf()));
            }
            let mode = OpenMode::ReadWrite {
                create_if_missing: self.cli.create_if_missing,
            };
            self.db = Some(Db::open(path, mode)?);
        }
        Ok(self.db.as_ref().expect("opened"))
    }

    fn readable(&mut self) -> Result<&Db, CliError> {
        if self.db.is_none() {
            self.db = Some(open_for_reading(self.cli.require_db(self.command)?)?);
        }
        Ok(self.db.as_ref().expect("opened"))
    }
}

impl Target for Local<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), CliError> {
        Ok(self.writable()?.put(key, value)?)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), CliError> {
        Ok(self.writable()?.delete(key)?)
    }

    fn get(&mut self, key: &[u8], _deadline: bool) -> Result<Option<Entry>, CliError> {
        Ok(self.readable()?.entry(key, now_ms())?)
    }

    fn scan(
        &mut self,
        range: &ScanRange,
        max: Option<usize>,
        _deadlines: bool,
        each: &mut Each<'_>,
    ) -> Result<(), CliError> {
        let db = self.readable()?;
        for (count, entry) in db.entries(range, now_ms()).enumerate() {
            if max.is_some_and(|max| count >= max) {
                break;
            }
            let (key, entry) = entry?;
            each(&key, &entry)?;
        }
        Ok(())
    }
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

/// A running daemon, over RESP.
pub(super) struct Remote<'a> {
    cli: &'a Cli,
    addr: ListenAddr,
    /// Whether the daemon is spoken to over TLS.
    tls: bool,
    client: Option<Client>,
}

impl<'a> Remote<'a> {
    pub(super) fn new(cli: &'a Cli, addr: ListenAddr, tls: bool) -> Remote<'a> {
        Remote {
            cli,
            addr,
            tls,
            client: None,
        }
    }

    /// The connection, made on first use.
    pub(super) fn client(&mut self) -> Result<&mut Client, CliError> {
        if self.client.is_none() {
            let access = self.access()?;
            let mut client = Client::connect_with(&self.addr, &access)?;
            // The connection's freshness, before anything reads on it.
            if let Some(position) = self.cli.read_after {
                let (position, ms) = (
                    position.to_string(),
                    self.cli.read_timeout.as_millis().max(1).to_string(),
                );
                let set = [&b"RKV.READAFTER"[..], position.as_bytes(), ms.as_bytes()];
                self.expect_ok(client.call(&set)?)?;
            }
            if let Some(bound) = self.cli.max_staleness {
                let ms = bound.as_millis().max(1).to_string();
                let set = [&b"RKV.MAXSTALENESS"[..], ms.as_bytes()];
                self.expect_ok(client.call(&set)?)?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// TLS and credentials from the flags.
    fn access(&self) -> Result<Access, CliError> {
        let cli = self.cli;
        if !self.tls && (cli.cacert.is_some() || cli.cert.is_some() || cli.sni.is_some()) {
            return Err(CliError::Usage(
                "--cacert, --cert, --key and --sni need --tls".into(),
            ));
        }
        let tls = self
            .tls
            .then(|| {
                let pair = cli.cert.as_deref().zip(cli.key.as_deref());
                ClientTls::new(cli.cacert.as_deref(), pair, cli.sni.as_deref())
            })
            .transpose()
            .map_err(CliError::Usage)?;
        let password = daemon_password(cli)?;
        if cli.user.is_some() && password.is_none() {
            return Err(CliError::Usage(
                "--user needs the user's password: --password_file FILE or RKV_PASSWORD".into(),
            ));
        }
        Ok(Access {
            tls,
            user: cli.user.as_ref().map(|u| u.as_bytes().to_vec()),
            password,
        })
    }

    /// The error for a reply the command cannot make sense of.
    pub(super) fn unexpected(&self, reply: &Reply) -> CliError {
        CliError::Remote(ClientError::Protocol {
            addr: self.addr.to_string(),
            detail: format!("unexpected reply {reply:?}"),
        })
    }

    /// A setting's `+OK`; anything else is a reply the command cannot
    /// make sense of (a refusal is already an error).
    fn expect_ok(&self, reply: Reply) -> Result<(), CliError> {
        match reply {
            Reply::Simple(_) => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The daemon's address.
    pub(super) fn addr(&self) -> &ListenAddr {
        &self.addr
    }
}

impl Remote<'_> {
    /// The deadlines of `keys` (unix ms), asked in one pipeline of
    /// PEXPIRETIME; `None` for a key without one (or gone since).
    fn deadlines(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<u64>>, CliError> {
        let commands: Vec<Vec<&[u8]>> = keys.iter().map(|k| vec![&b"PEXPIRETIME"[..], k]).collect();
        let replies = self.client()?.pipeline(&commands)?;
        replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Integer(at) => Ok(u64::try_from(at).ok()),
                other => Err(self.unexpected(&other)),
            })
            .collect()
    }
}

impl Target for Remote<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), CliError> {
        self.client()?.call(&[b"SET", key, value])?;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), CliError> {
        self.client()?.call(&[b"DEL", key])?;
        Ok(())
    }

    fn get(&mut self, key: &[u8], deadline: bool) -> Result<Option<Entry>, CliError> {
        let value = match self.client()?.call(&[b"GET", key])? {
            Reply::Bulk(value) => value,
            other => return Err(self.unexpected(&other)),
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let expires_at = match deadline {
            true => self.deadlines(&[key])?.pop().flatten(),
            false => None,
        };
        Ok(Some(Entry { value, expires_at }))
    }

    fn scan(
        &mut self,
        range: &ScanRange,
        max: Option<usize>,
        deadlines: bool,
        each: &mut Each<'_>,
    ) -> Result<(), CliError> {
        let mut from = range.from.clone().unwrap_or_default();
        let to = range.to.clone().unwrap_or_default();
        let mut left = max.unwrap_or(usize::MAX);
        while left > 0 {
            let count = left.min(SCAN_BATCH).to_string();
            let reply = self
                .client()?
                .call(&[b"RKV.SCAN", &from, &to, count.as_bytes()])?;
            let Reply::Array(Some(parts)) = reply else {
                return Err(self.unexpected(&reply));
            };
            let [next, Reply::Array(Some(entries))] = parts.as_slice() else {
                return Err(self.unexpected(&Reply::Array(Some(parts))));
            };
            let keys: Vec<&[u8]> = entries
                .chunks(2)
                .filter_map(|pair| match pair {
                    [Reply::Bulk(Some(k)), _] => Some(k.as_slice()),
                    _ => None,
                })
                .collect();
            let mut found = match deadlines {
                true => self.deadlines(&keys)?.into_iter(),
                false => Vec::new().into_iter(),
            };
            for pair in entries.chunks(2) {
                if let [Reply::Bulk(Some(k)), Reply::Bulk(Some(v))] = pair {
                    let expires_at = found.next().flatten();
                    let entry = Entry {
                        value: v.clone(),
                        expires_at,
                    };
                    each(k, &entry)?;
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
}
