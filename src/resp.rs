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
    /// RESP3's map `%2\r\n…`; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// RESP3's set `~2\r\n…`; an array in RESP2.
    Set(Vec<Reply>),
    /// RESP3's verbatim string `=…\r\ntxt:…` (INFO's text); a bulk
    /// string in RESP2.
    Verbatim(Vec<u8>),
}

/// The protocol a connection speaks: RESP2 until it says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, every client's default.
    #[default]
    Resp2,
    /// RESP3: maps, sets, a null of its own.
    Resp3,
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

    /// Appends the reply's RESP2 encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(out, Protocol::Resp2);
    }

    /// Appends the reply's encoding in `protocol` to `out`.
    pub fn encode_as(&self, out: &mut Vec<u8>, protocol: Protocol) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(s) => line(out, b'+', one_line(s).as_bytes()),
            Reply::Error(s) => line(out, b'-', one_line(s).as_bytes()),
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(None) | Reply::Array(None) if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => bulk(out, b'$', bytes),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => aggregate(out, b'*', items, protocol),
            Reply::Set(items) => aggregate(out, if resp3 { b'~' } else { b'*' }, items, protocol),
            Reply::Map(pairs) => {
                let (marker, len) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', 2 * pairs.len())
                };
                line(out, marker, len.to_string().as_bytes());
                for (key, value) in pairs {
                    key.encode_as(out, protocol);
                    value.encode_as(out, protocol);
                }
            }
            Reply::Verbatim(text) if resp3 => bulk(out, b'=', &[b"txt:", &text[..]].concat()),
            Reply::Verbatim(text) => bulk(out, b'$', text),
        }
    }
}

fn bulk(out: &mut Vec<u8>, marker: u8, bytes: &[u8]) {
    line(out, marker, bytes.len().to_string().as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn aggregate(out: &mut Vec<u8>, marker: u8, items: &[Reply], protocol: Protocol) {
    line(out, marker, items.len().to_string().as_bytes());
    for item in items {
        item.encode_as(out, protocol);
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

/// Caps on what one request, and its reply, may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request, all of its arguments and framing together, in bytes.
    pub max_request_bytes: usize,
    /// Largest reply to one request (the values of an `MGET`, the keys of a
    /// `SCAN`), in bytes: a larger one is refused before it is built.
    pub max_reply_bytes: usize,
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

/// Redis's caps for a connection that has not authenticated: a client
/// without the password cannot make the server hold more than this.
const UNAUTHENTICATED_ARGS: i64 = 10;
const UNAUTHENTICATED_ARG_BYTES: i64 = 16 * 1024;

/// Parses one request from the front of `buf`: `Ok(None)` when more bytes
/// are needed. Empty inline lines parse as a request with no arguments.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    RequestParser::default().parse(buf, limits, true)
}

/// Parses a client's requests as their bytes arrive. A request that is not
/// complete yet keeps what was parsed of it, so the next read goes on where
/// this one stopped: the cost of a request is linear in its size whatever
/// the read boundaries (a million arguments sent in 4 KiB writes are not
/// parsed again from the start on every read).
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Option<Partial>,
}

/// A multibulk request under way.
#[derive(Debug)]
struct Partial {
    count: usize,
    args: Vec<Vec<u8>>,
    /// Bytes of the request parsed so far (header and complete arguments).
    used: usize,
}

impl RequestParser {
    /// Parses the request at the front of `buf`, which must start where the
    /// previous complete request ended (and hold what earlier calls saw of
    /// this one). `authenticated` false applies Redis's caps for clients
    /// that have not given the password.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        authenticated: bool,
    ) -> Result<Option<Parsed>, ProtocolError> {
        let result = self.parse_from(buf, limits, authenticated);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn parse_from(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        authenticated: bool,
    ) -> Result<Option<Parsed>, ProtocolError> {
        if self.partial.is_none() {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            match first {
                b'*' => {}
                b'$' | b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%'
                | b'~' | b'>' | b'|' => {
                    return Err(ProtocolError(format!(
                        "expected '*', got '{}'",
                        char::from(first)
                    )))
                }
                _ => return parse_inline(buf),
            }
            let Some((count, pos)) = header(buf, 0)? else {
                return Ok(None);
            };
            if !authenticated && count > UNAUTHENTICATED_ARGS {
                return Err(ProtocolError("unauthenticated multibulk length".into()));
            }
            let count = match count {
                n if n > MAX_ARGS as i64 => {
                    return Err(ProtocolError("invalid multibulk length".into()))
                }
                n if n <= 0 => return Ok(Some((Vec::new(), pos))),
                n => n as usize,
            };
            self.partial = Some(Partial {
                count,
                args: Vec::with_capacity(count.min(1024)),
                used: pos,
            });
        }
        let partial = self.partial.as_mut().expect("a request under way");
        while partial.args.len() < partial.count {
            let pos = partial.used;
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
            if !authenticated && len > UNAUTHENTICATED_ARG_BYTES {
                return Err(ProtocolError("unauthenticated bulk length".into()));
            }
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
            partial.args.push(buf[start..end].to_vec());
            partial.used = end + 2;
        }
        let Partial { args, used, .. } = self.partial.take().expect("a request under way");
        Ok(Some((args, used)))
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
    let args =
        split_args(text).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    Ok(Some((args, end + 1)))
}

/// Splits an inline command as Redis's `sdssplitargs` does: words apart by
/// whitespace; `"…"` with `\\n`, `\\r`, `\\t`, `\\b`, `\\a`, `\\xHH` and `\\<c>`
/// escapes; `'…'` with only `\\'`. A closing quote must be followed by
/// whitespace or the end. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = line.get(i).copied();
            if in_double {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                        arg.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must end the word.
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else if in_single {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(arg);
    }
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
        max_reply_bytes: 1024,
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
    fn a_request_split_anywhere_parses_the_same_and_resumes() {
        let wire = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$2\r\n\r\n\r\n";
        for split in 0..wire.len() {
            let mut parser = RequestParser::default();
            let first = parser.parse(&wire[..split], &LIMITS, true).unwrap();
            assert_eq!(first, None, "split at {split}");
            let (args, used) = parser.parse(wire, &LIMITS, true).unwrap().unwrap();
            assert_eq!(args, [b"SET".to_vec(), b"hello".to_vec(), b"\r\n".to_vec()]);
            assert_eq!(used, wire.len());
        }
        // Arguments already parsed are not parsed again: the parser keeps
        // them and goes on from where it stopped.
        let mut parser = RequestParser::default();
        assert_eq!(parser.parse(&wire[..20], &LIMITS, true).unwrap(), None);
        assert_eq!(parser.partial.as_ref().unwrap().args.len(), 1);
    }

    #[test]
    fn unauthenticated_requests_are_capped_as_in_redis() {
        let mut parser = RequestParser::default();
        let err = parser.parse(b"*11\r\n", &LIMITS, false).unwrap_err();
        assert_eq!(err.0, "unauthenticated multibulk length");
        let err = parser
            .parse(b"*1\r\n$16385\r\n", &LIMITS, false)
            .unwrap_err();
        assert_eq!(err.0, "unauthenticated bulk length");
        assert!(parser
            .parse(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", &LIMITS, false)
            .is_ok());
    }

    #[test]
    fn inline_arguments_split_as_redis_splits_them() {
        let split = |s: &[u8]| split_args(s);
        assert_eq!(
            split(b"SET \"a b\" 'c d'").unwrap(),
            [b"SET".to_vec(), b"a b".to_vec(), b"c d".to_vec()]
        );
        assert_eq!(
            split(b"\"\\x41\\n\\\"\" 'it\\'s'").unwrap(),
            [b"A\n\"".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(split(b"\"\"").unwrap(), [Vec::<u8>::new()]);
        assert_eq!(split(b"SET \"a b"), None);
        assert_eq!(split(b"'a'b"), None, "a closing quote must end the word");
        assert_eq!(split(b"  ").unwrap(), Vec::<Vec<u8>>::new());
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
