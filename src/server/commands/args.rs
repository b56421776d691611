//! Arguments as Redis reads them: integers by its strict `string2ll`,
//! floats in C's `long double` (INCRBYFLOAT), expiry options and deadlines,
//! and the error texts that go with them.

use crate::resp::Reply;

/// Redis's reply to an argument that is not a 64-bit integer.
pub(super) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's reply to options it cannot make sense of.
pub(super) const SYNTAX: &str = "ERR syntax error";

/// An integer as Redis's `string2ll` reads it: optional `-`, no `+`, no
/// spaces, no leading zeros (but "0"), at most 20 bytes, within `i64`.
pub(super) fn int(arg: &[u8]) -> Option<i64> {
    if arg.is_empty() || arg.len() > 20 {
        return None;
    }
    if arg == b"0" {
        return Some(0);
    }
    let (negative, digits) = match arg.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// An option name, upper-cased for matching.
pub(super) fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// How an expiry argument counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// From now (`EX`, `PX`, `EXPIRE`).
    In,
    /// A unix time (`EXAT`, `PXAT`, `EXPIREAT`).
    At,
}

/// Which command's options [`SetOptions::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// `SET`: NX, XX, GET, KEEPTTL and the expiries.
    Set,
    /// `GETEX`: PERSIST and the expiries.
    GetEx,
}

/// The options of `SET` and `GETEX`, parsed as Redis's
/// `parseExtendedStringArgumentsOrReply` does: conflicting options are a
/// syntax error; a repeated expiry of the same kind takes the last value.
#[derive(Debug, Default)]
pub(super) struct SetOptions<'a> {
    pub nx: bool,
    pub xx: bool,
    pub get: bool,
    pub keep_ttl: bool,
    pub persist: bool,
    /// The expiry given: its kind, unit (ms per count) and argument.
    pub expiry: Option<(Deadline, i64, &'a [u8])>,
}

impl<'a> SetOptions<'a> {
    pub fn parse(options: &'a [Vec<u8>], family: Family) -> Result<SetOptions<'a>, Reply> {
        let mut o = SetOptions::default();
        let set = family == Family::Set;
        let mut i = 0;
        while i < options.len() {
            let next = options.get(i + 1).map(Vec::as_slice);
            let name = upper(&options[i]);
            let expiry_kind = o.expiry.map(|(kind, unit, _)| (kind, unit));
            let other_expiry = |kind| expiry_kind.is_some_and(|k| k != kind);
            match name.as_str() {
                "NX" if set && !o.xx => o.nx = true,
                "XX" if set && !o.nx => o.xx = true,
                "GET" if set => o.get = true,
                "KEEPTTL" if set && !o.persist && expiry_kind.is_none() => o.keep_ttl = true,
                "PERSIST" if !set && expiry_kind.is_none() && !o.keep_ttl => o.persist = true,
                "EX" | "PX" | "EXAT" | "PXAT" if !o.keep_ttl && !o.persist && next.is_some() => {
                    let kind = match name.as_str() {
                        "EX" => (Deadline::In, 1000),
                        "PX" => (Deadline::In, 1),
                        "EXAT" => (Deadline::At, 1000),
                        _ => (Deadline::At, 1),
                    };
                    if other_expiry(kind) {
                        return Err(Reply::error(SYNTAX));
                    }
                    o.expiry = next.map(|arg| (kind.0, kind.1, arg));
                    i += 1;
                }
                _ => return Err(Reply::error(SYNTAX)),
            }
            i += 1;
        }
        Ok(o)
    }

    /// The deadline the options give, in unix ms, if any.
    pub fn deadline(&self, command: &str) -> Result<Option<u64>, Reply> {
        self.expiry
            .map(|(kind, unit, arg)| deadline(arg, kind, unit, command))
            .transpose()
    }
}

/// Redis's `getExpireMillisecondsOrReply` for `SET`, `SETEX`, `GETEX`: the
/// count must be positive and the deadline must fit in an `i64` of ms.
pub(super) fn deadline(arg: &[u8], kind: Deadline, unit: i64, command: &str) -> Result<u64, Reply> {
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    let n = int(arg).ok_or_else(|| Reply::error(NOT_AN_INTEGER))?;
    if n <= 0 || n > i64::MAX / unit {
        return Err(invalid());
    }
    let ms = n * unit;
    let at = match kind {
        Deadline::In => ms
            .checked_add(crate::db::now_ms() as i64)
            .ok_or_else(invalid)?,
        Deadline::At => ms,
    };
    Ok(at as u64)
}

mod ffi {
    use std::os::raw::{c_char, c_int};

    extern "C" {
        /// See `csrc/incrbyfloat.c`.
        pub fn rkv_incrbyfloat(
            current: *const c_char,
            current_len: usize,
            by: *const c_char,
            by_len: usize,
            out: *mut c_char,
            out_len: usize,
            written: *mut usize,
        ) -> c_int;
    }
}

/// Room for any `long double` printed as Redis prints it (its
/// `MAX_LONG_DOUBLE_CHARS`).
const MAX_LONG_DOUBLE_CHARS: usize = 5 * 1024;

/// `current + by` as `INCRBYFLOAT` computes it: both parsed by `strtold`,
/// added in C's `long double` (x87 extended precision on x86-64) and
/// printed with 17 decimals, trailing zeros cut. Rust has no such type,
/// and Redis's answers (`0.1 + 0.2` is `0.3`) depend on it, so the sum is
/// computed by a few lines of C (`csrc/incrbyfloat.c`).
pub(super) fn add_float(current: &[u8], by: &[u8]) -> Result<Vec<u8>, Reply> {
    let mut out = vec![0u8; MAX_LONG_DOUBLE_CHARS];
    let mut written = 0usize;
    // SAFETY: each pointer is valid for the length passed with it, `out`
    // is writable for its length, and the C function reads and writes
    // only within those lengths.
    let status = unsafe {
        ffi::rkv_incrbyfloat(
            current.as_ptr().cast(),
            current.len(),
            by.as_ptr().cast(),
            by.len(),
            out.as_mut_ptr().cast(),
            out.len(),
            &mut written,
        )
    };
    match status {
        0 => {
            out.truncate(written);
            Ok(out)
        }
        1 => Err(Reply::error("ERR value is not a valid float")),
        _ => Err(Reply::error("ERR increment would produce NaN or Infinity")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_strictly_as_redis_reads_them() {
        assert_eq!(int(b"0"), Some(0));
        assert_eq!(int(b"-1"), Some(-1));
        assert_eq!(int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn floats_add_in_long_double_as_redis_does() {
        let add = |a: &str, b: &str| add_float(a.as_bytes(), b.as_bytes());
        assert_eq!(add("0", "0.1").unwrap(), b"0.1");
        assert_eq!(add("0.1", "0.2").unwrap(), b"0.3");
        assert_eq!(add("10.5", "0.1").unwrap(), b"10.6");
        assert_eq!(add("5.0e3", "2.0e2").unwrap(), b"5200");
        assert_eq!(add("1", "-1").unwrap(), b"0");
        assert_eq!(add("-0.0", "0").unwrap(), b"0");
        assert!(add("abc", "1").is_err());
        assert!(add("1", " 1").is_err());
        assert!(add("1", "nan").is_err());
        let Err(Reply::Error(e)) = add("1e4932", "1e4932") else {
            panic!("an overflow to infinity is refused");
        };
        assert!(e.contains("NaN or Infinity"), "{e}");
    }

    #[test]
    fn set_options_conflict_as_in_redis() {
        let parse = |words: &[&str], family| {
            let owned: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            SetOptions::parse(&owned, family).is_ok()
        };
        assert!(parse(&["NX", "GET", "EX", "10"], Family::Set));
        assert!(parse(&["EX", "1", "EX", "2"], Family::Set));
        assert!(!parse(&["NX", "XX"], Family::Set));
        assert!(!parse(&["EX", "1", "PX", "2"], Family::Set));
        assert!(!parse(&["KEEPTTL", "EX", "1"], Family::Set));
        assert!(!parse(&["EX"], Family::Set));
        assert!(!parse(&["PERSIST"], Family::Set));
        assert!(parse(&["PERSIST"], Family::GetEx));
        assert!(!parse(&["NX"], Family::GetEx));
        assert!(!parse(&["PERSIST", "EX", "1"], Family::GetEx));
    }
}
