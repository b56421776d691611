//! How keys and values are written on the command line and printed back:
//! raw bytes, or `ldb`'s hex form (`0x` followed by upper-case hex digits).

use crate::error::{Error, Result};

/// How one side (key or value) is spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The bytes as given; printed lossily as UTF-8.
    #[default]
    Raw,
    /// `0x` followed by hex digits, as RocksDB's `ldb --hex` reads and prints them.
    Hex,
}

impl Encoding {
    /// Decodes a command-line argument into bytes.
    pub fn decode(self, input: &str) -> Result<Vec<u8>> {
        match self {
            Encoding::Raw => Ok(input.as_bytes().to_vec()),
            Encoding::Hex => decode_hex(input),
        }
    }

    /// Renders bytes for printing.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Raw => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Hex => format!("0x{}", hex::encode_upper(bytes)),
        }
    }
}

/// Decodes `ldb`'s hex form: `0x` (or `0X`) then an even number of hex digits.
pub fn decode_hex(input: &str) -> Result<Vec<u8>> {
    let invalid = |reason: &str| Error::InvalidHex {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let digits = input
        .strip_prefix("0x")
        .or_else(|| input.strip_prefix("0X"))
        .ok_or_else(|| invalid("it must start with 0x"))?;
    hex::decode(digits).map_err(|e| match e {
        hex::FromHexError::OddLength => invalid("it has an odd number of hex digits"),
        hex::FromHexError::InvalidHexCharacter { c, .. } => {
            invalid(&format!("{c:?} is not a hex digit"))
        }
        other => invalid(&other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_binary_bytes() {
        let bytes = [0u8, 0xff, b'\n', b'a'];
        let text = Encoding::Hex.encode(&bytes);
        assert_eq!(text, "0x00FF0A61");
        assert_eq!(Encoding::Hex.decode(&text).unwrap(), bytes);
        assert_eq!(decode_hex("0Xab").unwrap(), [0xab]);
        assert_eq!(decode_hex("0x").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn bad_hex_is_an_error_not_a_panic() {
        for bad in ["abc", "0x1", "0xzz", "", "x12"] {
            let err = decode_hex(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidHex { .. }), "{bad}: {err}");
        }
    }
}
