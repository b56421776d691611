//! RESP, the Redis protocol: parsing requests as a Redis server does (arrays
//! of bulk strings, and inline commands for telnet users), with Redis's
//! protocol error texts and caps on request size, and encoding replies.
//!
//! Written here rather than taken from a crate: the RESP crates are client
//! frame codecs, while a server needs incremental request parsing with size
//! caps checked before anything is buffered, and Redis's exact error wording.

/// A reply to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`: the text includes the error code (`ERR`, `NOAUTH`, …).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`, or the null bulk string `$-1` for `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n…`, or the null array `*-1` for `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// An error reply; `text` starts with its code (`ERR`, `READONLY`, …).
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    /// An array of replies.
    pub fn array(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => line(out, b'+', one_line(s).as_bytes()),
            Reply::Error(s) => line(out, b'-', one_line(s).as_bytes()),
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.push(marker);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Simple strings and errors cannot carry line breaks.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into()
    } else {
        s.into()
    }
}

/// Caps on what one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request, all of its arguments and framing together, in bytes.
    pub max_request_bytes: usize,
}

/// Redis's cap on the number of arguments of one request.
const MAX_ARGS: usize = 1024 * 1024;
/// Redis's cap on an inline request or a header line without its end.
const MAX_INLINE: usize = 64 * 1024;

/// A request the server cannot parse; the connection is closed after the
/// error is sent, since the stream can no longer be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    /// The `-ERR Protocol error: …` reply for it.
    pub fn reply(&self) -> Reply {
        Reply::error(format!("ERR Protocol error: {}", self.0))
    }
}

/// A parsed request: its arguments, and how many bytes of the buffer it used.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses one request from the front of `buf`: `Ok(None)` when more bytes
/// are needed. Empty inline lines parse as a request with no arguments.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        b'*' => parse_multibulk(buf, limits),
        b'$' | b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%' | b'~'
        | b'>' | b'|' => Err(ProtocolError(format!(
            "expected '*', got '{}'",
            char::from(first)
        ))),
        _ => parse_inline(buf),
    }
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big inline request".into()))
        } else {
            Ok(None)
        };
    };
    if end > MAX_INLINE {
        return Err(ProtocolError("too big inline request".into()));
    }
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let args = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((args, end + 1)))
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let Some((count, mut pos)) = header(buf, 0)? else {
        return Ok(None);
    };
    let count = match count {
        n if n > MAX_ARGS as i64 => return Err(ProtocolError("invalid multibulk length".into())),
        n if n <= 0 => return Ok(Some((Vec::new(), pos))),
        n => n as usize,
    };
    let mut args = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(other)
                )))
            }
        }
        let Some((len, start)) = header(buf, pos)? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > limits.max_request_bytes as u64 {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let end = start + len as usize;
        if end > limits.max_request_bytes {
            return Err(too_big(limits));
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        args.push(buf[start..end].to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

fn too_big(limits: &Limits) -> ProtocolError {
    ProtocolError(format!(
        "request larger than max-request-bytes ({} bytes)",
        limits.max_request_bytes
    ))
}

/// Reads a `<marker><integer>\r\n` line at `pos`: the integer and the
/// position after the line, or `None` when the line is incomplete.
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let marker = buf[pos];
    let rest = &buf[pos + 1..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() > MAX_INLINE {
            return Err(ProtocolError("too big header line".into()));
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    let what = if marker == b'*' { "multibulk" } else { "bulk" };
    let invalid = || ProtocolError(format!("invalid {what} length"));
    if rest[cr + 1] != b'\n' {
        return Err(invalid());
    }
    let n = std::str::from_utf8(&rest[..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(invalid)?;
    Ok(Some((n, pos + 1 + cr + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_request_bytes: 1024,
    };

    fn parse(bytes: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
        parse_request(bytes, &LIMITS)
    }

    #[test]
    fn parses_arrays_and_reports_the_bytes_used() {
        let wire = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (args, used) = parse(wire).unwrap().unwrap();
        assert_eq!(args, [b"GET".to_vec(), b"k".to_vec()]);
        let (args, rest) = parse(&wire[used..]).unwrap().unwrap();
        assert_eq!(args, [b"PING".to_vec()]);
        assert_eq!(used + rest, wire.len());
    }

    #[test]
    fn binary_safe_values() {
        let wire = b"*3\r\n$3\r\nSET\r\n$2\r\n\r\n\r\n$3\r\n\x00\xff\n\r\n";
        let (args, _) = parse(wire).unwrap().unwrap();
        assert_eq!(args[1], b"\r\n");
        assert_eq!(args[2], b"\x00\xff\n");
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more() {
        let wire = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for end in 0..wire.len() {
            assert_eq!(parse(&wire[..end]), Ok(None), "prefix of {end} bytes");
        }
    }

    #[test]
    fn inline_commands() {
        let (args, used) = parse(b"PING  hello\r\nrest").unwrap().unwrap();
        assert_eq!(args, [b"PING".to_vec(), b"hello".to_vec()]);
        assert_eq!(used, 13);
        assert_eq!(parse(b"\r\n").unwrap().unwrap().0.len(), 0);
        assert_eq!(parse(b"PING").unwrap(), None);
    }

    #[test]
    fn malformed_requests_get_redis_errors() {
        let err = |wire: &[u8]| parse(wire).unwrap_err().0;
        assert_eq!(err(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*99999999\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*1\r\n$-5\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$99999999999\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$abc\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n:5\r\n"), "expected '$', got ':'");
        assert_eq!(err(b"$3\r\nfoo\r\n"), "expected '*', got '$'");
        assert_eq!(
            err(b"*1\r\n$3\r\nfooXY"),
            "bulk string not terminated by CRLF"
        );
        assert!(err(b"*2\r\n$1020\r\n").contains("max-request-bytes"));
        assert_eq!(err(&vec![b'a'; MAX_INLINE + 1]), "too big inline request");
        let reply = ProtocolError("invalid bulk length".into()).reply();
        assert_eq!(
            reply,
            Reply::Error("ERR Protocol error: invalid bulk length".into())
        );
    }

    #[test]
    fn encodes_every_reply_kind() {
        let mut out = Vec::new();
        Reply::array(vec![
            Reply::ok(),
            Reply::error("ERR bad\r\nthing"),
            Reply::Integer(-3),
            Reply::bulk(b"a\r\nb".to_vec()),
            Reply::Bulk(None),
            Reply::Array(None),
        ])
        .encode(&mut out);
        assert_eq!(
            out,
            b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$4\r\na\r\nb\r\n$-1\r\n*-1\r\n"
        );
    }
}
