//! RocksDB's backup meta file (`<backup dir>/meta/<id>`): the text file that
//! lists a backup's files and their crc32c checksums.
//!
//! BackupEngine's C API has no checksum verification (only sizes), so rkv
//! reads this file itself to check every byte. The format is RocksDB's
//! (`utilities/backup/backup_engine.cc`, `BackupMeta::LoadFromFile`):
//!
//! ```text
//! [schema_version 2]      optional; absent means version 1
//! <timestamp>             unix seconds
//! <sequence number>
//! [metadata <hex>]        app metadata; in version 2 also other `name value` fields
//! <number of files>
//! <relative path> crc32 <decimal crc32c> [name value]…
//! [// FOOTER …]           version 2 only
//! ```

use std::fmt;

/// One file of a backup, as its meta file lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFile {
    /// Path relative to the backup directory (`shared_checksum/…`, `private/3/…`).
    pub path: String,
    /// crc32c of the whole file, when recorded.
    pub crc32c: Option<u32>,
    /// Size in bytes, when recorded (newer schema versions only).
    pub size: Option<u64>,
}

/// The parsed content of a backup meta file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMeta {
    /// When the backup was taken, in unix seconds.
    pub timestamp: u64,
    /// The database's sequence number the backup holds.
    pub sequence: u64,
    /// The application metadata bytes (empty when none).
    pub app_metadata: Vec<u8>,
    /// The files of the backup, excluded files left out.
    pub files: Vec<MetaFile>,
}

/// Why a meta file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses the text of a backup meta file.
pub fn parse(text: &str) -> Result<BackupMeta, ParseError> {
    let err = |m: String| ParseError(m);
    let mut lines = text.lines();
    let mut next = || {
        lines
            .next()
            .ok_or_else(|| err("unexpected end of file".into()))
    };

    let mut line = next()?;
    let mut schema_v2 = false;
    if let Some(version) = line.strip_prefix("schema_version ") {
        if version != "2" && !version.starts_with("2.") {
            return Err(err(format!("unsupported schema version {version}")));
        }
        schema_v2 = true;
        line = next()?;
    }
    let timestamp = number(line, "timestamp")?;
    let sequence = number(next()?, "sequence number")?;

    let mut app_metadata = Vec::new();
    let file_count = loop {
        let line = next()?;
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            break number(line, "file count")?;
        }
        let (name, value) = line
            .split_once(' ')
            .ok_or_else(|| err(format!("expected a file count or a field, found {line:?}")))?;
        if name == "metadata" {
            app_metadata = hex::decode(value).map_err(|e| err(format!("app metadata: {e}")))?;
        } else if !schema_v2 || name.starts_with("ni::") {
            return Err(err(format!("unknown field {name:?}")));
        }
    };

    let mut files = Vec::new();
    for line in lines {
        if schema_v2 && line == "// FOOTER" {
            break;
        }
        let mut parts = line.split(' ');
        let path = parts.next().filter(|p| !p.is_empty());
        let path = path.ok_or_else(|| err("empty file entry".into()))?;
        let fields: Vec<&str> = parts.collect();
        if !fields.len().is_multiple_of(2) {
            return Err(err(format!("bad field list for {path}")));
        }
        let mut file = MetaFile {
            path: path.to_string(),
            crc32c: None,
            size: None,
        };
        let mut excluded = false;
        for pair in fields.chunks(2) {
            match pair[0] {
                "crc32" => file.crc32c = Some(number(pair[1], "crc32")? as u32),
                "size" => file.size = Some(number(pair[1], "size")?),
                "ni::excluded" => excluded = pair[1] == "true",
                name if name.starts_with("ni::") => {
                    return Err(err(format!("unknown field {name:?} for {path}")))
                }
                _ => {}
            }
        }
        if !excluded {
            files.push(file);
        }
    }
    if files.len() as u64 != file_count {
        return Err(err(format!(
            "lists {} files but says it has {file_count}",
            files.len()
        )));
    }
    Ok(BackupMeta {
        timestamp,
        sequence,
        app_metadata,
        files,
    })
}

fn number(text: &str, what: &str) -> Result<u64, ParseError> {
    text.parse()
        .map_err(|_| ParseError(format!("bad {what} {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_1_with_metadata() {
        let text = "1700000000\n42\nmetadata 7B7D\n2\n\
                    shared_checksum/000008_s1_100.sst crc32 12345\n\
                    private/1/MANIFEST-000005 crc32 4294967295\n";
        let meta = parse(text).unwrap();
        assert_eq!(meta.timestamp, 1_700_000_000);
        assert_eq!(meta.sequence, 42);
        assert_eq!(meta.app_metadata, b"{}");
        assert_eq!(meta.files.len(), 2);
        assert_eq!(meta.files[1].crc32c, Some(u32::MAX));
    }

    #[test]
    fn parses_version_2_fields_and_footer() {
        let text = "schema_version 2.1\n1\n2\nsome_field x\n1\n\
                    private/1/CURRENT crc32 7 size 16 temp kHot\n// FOOTER\nx y\n";
        let meta = parse(text).unwrap();
        assert_eq!(meta.files[0].size, Some(16));
        assert!(meta.app_metadata.is_empty());
    }

    #[test]
    fn rejects_truncated_or_inconsistent_files() {
        assert!(parse("").is_err());
        assert!(parse("1\n2\n").is_err());
        assert!(parse("1\n2\n3\nprivate/1/CURRENT crc32 7\n").is_err());
        assert!(parse("schema_version 9\n1\n2\n0\n").is_err());
        assert!(parse("1\n2\n1\nprivate/1/CURRENT crc32\n").is_err());
    }
}
