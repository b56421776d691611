//! The live tail's segments in a [`BackupDir`]: `log/<first>.seg`, each
//! written to a dot-file, synced, and linked into place under its name (a
//! link, unlike a rename, never replaces a segment another master put
//! there first). Stock RocksDB tools ignore the directory.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use super::BackupDir;
use crate::error::{Error, Result};
use crate::tail::store::{
    parse_segment_file, segment_object, Committed, LogSink, LogSource, LOG_DIR, MAX_SEGMENT_BYTES,
};

impl BackupDir {
    fn segment_path(&self, first: u64) -> PathBuf {
        self.path.join(segment_object(first))
    }
}

impl LogSource for BackupDir {
    fn read_segment(&self, first: u64) -> Result<Option<Vec<u8>>> {
        let path = self.segment_path(first);
        let context = || format!("read {}", path.display());
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(context(), e)),
        };
        let mut bytes = Vec::new();
        // One byte past the cap tells a segment too large from one at it.
        file.take(MAX_SEGMENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(context(), e))?;
        if bytes.len() as u64 > MAX_SEGMENT_BYTES {
            return Err(Error::BadSegment {
                name: self.segment_name(first),
                source: crate::tail::SegmentError::TooLarge(MAX_SEGMENT_BYTES),
            });
        }
        Ok(Some(bytes))
    }

    fn segments(&self) -> Result<Vec<u64>> {
        let dir = self.path.join(LOG_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
        };
        let mut firsts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            firsts.extend(entry.file_name().to_str().and_then(parse_segment_file));
        }
        firsts.sort_unstable();
        Ok(firsts)
    }

    fn segment_name(&self, first: u64) -> String {
        self.segment_path(first).display().to_string()
    }
}

impl LogSink for BackupDir {
    fn write_segment(&self, first: u64, bytes: &[u8]) -> Result<Committed> {
        self.check_fence()?;
        let dir = self.path.join(LOG_DIR);
        let path = self.segment_path(first);
        let tmp = dir.join(format!(".{first:020}.{}.tmp", std::process::id()));
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        fs::create_dir_all(&dir).map_err(|e| io("make the directory of", e))?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            // Synced before it has its name: a segment that is there is
            // whole, even after a power cut.
            file.sync_data()
        };
        let linked = write().and_then(|()| fs::hard_link(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Committed::New),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let there = fs::read(&path).map_err(|e| io("read", e))?;
                if there == bytes {
                    Ok(Committed::AlreadyThere)
                } else {
                    Err(Error::SegmentExists {
                        name: self.segment_name(first),
                    })
                }
            }
            Err(e) => Err(io("write", e)),
        }
    }

    fn remove_segment(&self, first: u64) -> Result<()> {
        let path = self.segment_path(first);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }
}
