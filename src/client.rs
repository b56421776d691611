//! A small blocking RESP client: what the `rkv` CLI uses to talk to a
//! running daemon, and what the process-level tests speak.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

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

/// A connection to a daemon.
pub struct Client {
    addr: String,
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Client {
    /// Connects, and authenticates when `password` is given.
    pub fn connect(addr: &ListenAddr, password: Option<&[u8]>) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let io = |source| ClientError::Io {
            addr: name.clone(),
            source,
        };
        let stream = Stream::connect(addr).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut client = Client {
            addr: name.clone(),
            reader: BufReader::new(stream),
            writer,
        };
        if let Some(password) = password {
            client.call(&[b"AUTH", password])?;
        }
        Ok(client)
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
        self.writer
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
        read_reply(&mut self.reader).map_err(|e| match e {
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
