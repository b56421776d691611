//! A small blocking RESP client: what the `rkv` CLI uses to talk to a
//! running daemon, and what the process-level tests speak; over TLS and
//! as a named user when asked ([`Access`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::resp::Reply;
use crate::server::{ListenAddr, Stream};

/// Why a call to a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached or the connection broke.
    #[error("cannot talk to the rkv daemon at {addr}: {source}")]
    Io {
        /// Where.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with something that is not RESP.
    #[error("the daemon at {addr} sent a malformed reply: {detail}")]
    Protocol {
        /// Where.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The daemon answered with an error reply.
    #[error("the daemon at {addr} answered: {message}")]
    Server {
        /// Where.
        addr: String,
        /// The error text, code first (`READONLY …`, `NOAUTH …`).
        message: String,
    },
}

/// How a client reaches a daemon beyond its address: over TLS or not, and
/// as whom.
#[derive(Clone, Default)]
pub struct Access {
    /// TLS, when the daemon's address is a `--tls-listen` one.
    pub tls: Option<ClientTls>,
    /// The user to log in as (`AUTH user password`); the default user
    /// when `None`.
    pub user: Option<Vec<u8>>,
    /// The password; no `AUTH` when `None`.
    pub password: Option<Vec<u8>>,
}

/// A client's TLS: the CAs it trusts, the certificate it presents, and the
/// name it expects on the daemon's certificate.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Trusts the CA certificates in `ca` (PEM), or the system's when
    /// `None`; presents `cert` and `key` (PEM) when given; expects
    /// `server_name` on the daemon's certificate, or the address
    /// connected to (an IP address or host name) when `None`. The error
    /// is a sentence naming the file.
    pub fn new(
        ca: Option<&Path>,
        cert_and_key: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, String> {
        use crate::server::tls::{read_certs, read_key, read_roots};
        let roots = match ca {
            Some(ca) => read_roots("the CA certificate file", ca).map_err(|e| e.to_string())?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    return Err(
                        "no CA certificates found on this system; give --cacert FILE".into(),
                    );
                }
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match cert_and_key {
            Some((cert, key)) => {
                let chain = read_certs("the certificate file", cert).map_err(|e| e.to_string())?;
                let key = read_key("the key file", key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("the certificate and key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| format!("{name:?} is not a host name or IP address"))
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name to check the daemon's certificate against.
    fn name_for(&self, addr: &ListenAddr) -> std::io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        match addr {
            ListenAddr::Tcp(socket) => Ok(ServerName::IpAddress(socket.ip().into())),
            ListenAddr::Unix(_) => Err(std::io::Error::other(
                "TLS over a Unix socket needs the certificate's name (--sni NAME)",
            )),
        }
    }
}

/// The connection under the RESP: the socket, or a TLS session over it.
enum Wire {
    Plain(Stream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Stream>>),
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
        }
    }
}

/// A connection to a daemon.
pub struct Client {
    addr: String,
    /// Replies are read through the buffer; requests written to the wire
    /// under it.
    wire: BufReader<Wire>,
}

impl Client {
    /// Connects, and authenticates when `password` is given.
    pub fn connect(addr: &ListenAddr, password: Option<&[u8]>) -> Result<Client, ClientError> {
        let access = Access {
            password: password.map(<[u8]>::to_vec),
            ..Access::default()
        };
        Client::connect_with(addr, &access)
    }

    /// Connects as `access` says: over TLS (the handshake done here, so a
    /// refused certificate is this call's error), and logged in.
    pub fn connect_with(addr: &ListenAddr, access: &Access) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let io = |source| ClientError::Io {
            addr: name.clone(),
            source,
        };
        let stream = Stream::connect(addr).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(io)?;
        let wire = match &access.tls {
            None => Wire::Plain(stream),
            Some(tls) => {
                let session = rustls::ClientConnection::new(
                    Arc::clone(&tls.config),
                    tls.name_for(addr).map_err(io)?,
                )
                .map_err(|e| io(std::io::Error::other(e)))?;
                let mut tls = rustls::StreamOwned::new(session, stream);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(io)?;
                }
                Wire::Tls(Box::new(tls))
            }
        };
        let mut client = Client {
            addr: name.clone(),
            wire: BufReader::new(wire),
        };
        if let Some(password) = &access.password {
            match &access.user {
                Some(user) => client.call(&[b"AUTH", user, password])?,
                None => client.call(&[b"AUTH", password])?,
            };
        }
        Ok(client)
    }

    /// The certificate the daemon presented (DER), over TLS.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self.wire.get_ref() {
            Wire::Tls(s) => Some(s.conn.peer_certificates()?.first()?.to_vec()),
            Wire::Plain(_) => None,
        }
    }

    /// Sends one command and reads its reply; an error reply is an `Err`.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ClientError> {
        match self.call_raw(args)? {
            Reply::Error(message) => Err(ClientError::Server {
                addr: self.addr.clone(),
                message,
            }),
            reply => Ok(reply),
        }
    }

    /// Sends one command and reads its reply, error replies included.
    pub fn call_raw(&mut self, args: &[&[u8]]) -> Result<Reply, ClientError> {
        let mut replies = self.pipeline(&[args.to_vec()])?;
        Ok(replies.pop().expect("one reply per command"))
    }

    /// Sends several commands in one write and reads their replies in
    /// order, error replies included (a pipeline, as redis-benchmark -P).
    pub fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> Result<Vec<Reply>, ClientError> {
        let mut out = Vec::new();
        for args in commands {
            Reply::array(args.iter().map(|a| Reply::bulk(a.to_vec())).collect()).encode(&mut out);
        }
        self.wire
            .get_mut()
            .write_all(&out)
            .map_err(|source| ClientError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        commands.iter().map(|_| self.read_reply()).collect()
    }

    /// One `field:value` of the daemon's `INFO` (of `section`, or all
    /// sections); `None` when it reports no such field.
    pub fn info_field(
        &mut self,
        section: Option<&str>,
        field: &str,
    ) -> Result<Option<String>, ClientError> {
        let mut args: Vec<&[u8]> = vec![b"INFO"];
        args.extend(section.map(str::as_bytes));
        let Reply::Bulk(Some(text)) = self.call(&args)? else {
            return Ok(None);
        };
        let prefix = format!("{field}:");
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string)))
    }

    /// Reads one reply.
    fn read_reply(&mut self) -> Result<Reply, ClientError> {
        read_reply(&mut self.wire).map_err(|e| match e {
            ReadError::Io(source) => ClientError::Io {
                addr: self.addr.clone(),
                source,
            },
            ReadError::Protocol(detail) => ClientError::Protocol {
                addr: self.addr.clone(),
                detail,
            },
        })
    }
}

enum ReadError {
    Io(std::io::Error),
    Protocol(String),
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, ReadError> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).map_err(ReadError::Io)?;
    if line.is_empty() {
        return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(ReadError::Protocol("line not ended by CRLF".into()));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || {
        body.parse::<i64>()
            .map_err(|_| ReadError::Protocol(format!("bad length {body:?}")))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(body),
        b'-' => Reply::Error(body),
        b':' => Reply::Integer(number()?),
        b'$' => match number()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut data = vec![0u8; n as usize + 2];
                reader.read_exact(&mut data).map_err(ReadError::Io)?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match number()? {
            n if n < 0 => Reply::Array(None),
            n => Reply::Array(Some(
                (0..n)
                    .map(|_| read_reply(reader))
                    .collect::<Result<_, _>>()?,
            )),
        },
        // RESP3, after HELLO 3.
        b'_' => Reply::Bulk(None),
        b'~' => Reply::Set(
            (0..number()?)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()?,
        ),
        b'%' => Reply::Map(
            (0..number()?)
                .map(|_| Ok((read_reply(reader)?, read_reply(reader)?)))
                .collect::<Result<_, _>>()?,
        ),
        b'=' => {
            let n = number()?.max(4) as usize;
            let mut data = vec![0u8; n + 2];
            reader.read_exact(&mut data).map_err(ReadError::Io)?;
            data.truncate(n);
            // "txt:" or "mkd:" first.
            Reply::Verbatim(data.split_off(4))
        }
        other => {
            return Err(ReadError::Protocol(format!(
                "unknown reply type {:?}",
                char::from(other)
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_server_encodes() {
        let reply = Reply::array(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(7),
            Reply::bulk(b"a\r\nb".to_vec()),
            Reply::Bulk(None),
            Reply::Array(None),
        ]);
        let mut wire = Vec::new();
        reply.encode(&mut wire);
        let parsed = read_reply(&mut std::io::Cursor::new(wire));
        assert!(matches!(parsed, Ok(r) if r == reply));
    }
}
