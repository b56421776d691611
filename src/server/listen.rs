//! Listen addresses (`HOST:PORT` or `unix:/path`), listeners and client
//! streams over TCP and Unix sockets.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/run/rkv/master.sock`).
    Unix(PathBuf),
}

impl ListenAddr {
    /// Whether only this machine can connect: a loopback IP or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }

    /// Parses a listen flag's value, where `none` means no listener.
    pub fn parse_or_none(s: &str) -> Result<Option<ListenAddr>, String> {
        match s {
            "none" => Ok(None),
            _ => s.parse().map(Some),
        }
    }

    /// Whether this is a Unix socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, ListenAddr::Unix(_))
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/rkv/master.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(addr));
        }
        // A host name such as localhost:6380.
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(ListenAddr::Tcp)
                .ok_or_else(|| format!("{s:?} resolves to no address")),
            Err(_) => Err(format!(
                "{s:?} is not HOST:PORT (e.g. 127.0.0.1:6380) or unix:/path/to.sock"
            )),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listener.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket, and its path (removed on shutdown).
    Unix(UnixListener, PathBuf),
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file left by a dead process is
    /// replaced; one a live process answers on is not.
    pub fn bind(addr: &ListenAddr) -> std::io::Result<Listener> {
        let context =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}"));
        match addr {
            ListenAddr::Tcp(socket) => TcpListener::bind(socket)
                .map(Listener::Tcp)
                .map_err(context),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                // Only a socket nobody answers on is ours to replace: any
                // other file at the path is the operator's, and stays.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!(
                                "listen on {addr}: {} exists and is not a socket; remove it or \
                                 choose another path",
                                path.display()
                            ),
                        ));
                    }
                    if UnixStream::connect(path).is_err() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                UnixListener::bind(path)
                    .map(|l| Listener::Unix(l, path.clone()))
                    .map_err(context)
            }
        }
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    /// The address, for log lines.
    pub fn describe(&self) -> String {
        self.local_addr().map(|a| a.to_string()).unwrap_or_default()
    }

    /// Makes `accept` answer `WouldBlock` instead of waiting, for a
    /// listener driven by a poll.
    pub fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l, _) => l.set_nonblocking(true),
        }
    }

    /// Takes the next client waiting to be accepted.
    pub fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                // Replies go out as soon as they are written.
                let _ = stream.set_nodelay(true);
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// A client connection.
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to a daemon.
    pub fn connect(addr: &ListenAddr) -> std::io::Result<Stream> {
        match addr {
            ListenAddr::Tcp(socket) => {
                let stream = TcpStream::connect(socket)?;
                let _ = stream.set_nodelay(true);
                Ok(Stream::Tcp(stream))
            }
            ListenAddr::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }

    /// A second handle on the same connection.
    pub fn try_clone(&self) -> std::io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// Bounds how long a read may block.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_addresses() {
        let tcp: ListenAddr = "127.0.0.1:6380".parse().unwrap();
        assert!(tcp.is_local());
        assert!(!"0.0.0.0:6380".parse::<ListenAddr>().unwrap().is_local());
        assert!("[::1]:6380".parse::<ListenAddr>().unwrap().is_local());
        let unix: ListenAddr = "unix:/run/rkv.sock".parse().unwrap();
        assert!(unix.is_local() && unix.is_unix());
        assert_eq!(unix.to_string(), "unix:/run/rkv.sock");
        for bad in ["6380", "unix:", "host", "127.0.0.1:notaport"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }
}
