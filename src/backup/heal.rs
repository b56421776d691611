//! Damage in a backup directory, and healing it: checking files against
//! the checksums their backups record, the master's rolling scrub, removing
//! damaged files so the next backup copies them again, and dropping the
//! backups a damaged file left incomplete. Also the master's lock.

use std::collections::{HashMap, HashSet};
use std::fs;

use super::dir::{BackupDir, MASTER_LOCK, META_DIR, PRIVATE_DIR};
use super::meta;
use super::{Damage, ScrubCursor};
use crate::error::{Error, Result};

impl BackupDir {
    /// Why the store's copy of `file` is not what a backup recorded, if it
    /// is not: missing, another size, or another crc32c.
    pub(super) fn check_file(&self, file: &meta::MetaFile) -> Option<String> {
        self.present_size(file)
            .err()
            .or_else(|| self.crc_mismatch(file))
    }

    /// Why the store's copy of `file` does not have the crc32c its backup
    /// records, if it does not (reads it whole; the size is not checked).
    pub(super) fn crc_mismatch(&self, file: &meta::MetaFile) -> Option<String> {
        let expected = file.crc32c?;
        match Self::crc32c_of(&self.path().join(&file.path)) {
            Ok(actual) if actual == expected => None,
            Ok(actual) => Some(format!(
                "{} has crc32c {actual}, the backup records {expected}",
                file.path
            )),
            Err(e) => Some(format!("cannot read {}: {e}", file.path)),
        }
    }

    /// The size of the store's copy of `file`, or why it is not the one a
    /// backup recorded without reading it: missing, or another size. This
    /// is RocksDB's own test when it loads a backup.
    pub(super) fn present_size(&self, file: &meta::MetaFile) -> std::result::Result<u64, String> {
        let len = match fs::metadata(self.path().join(&file.path)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("{} is missing", file.path))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", file.path)),
        };
        // Shared files name their size: `<number>_s<session>_<crc>_<size>.sst`
        // in RocksDB's default naming; the meta file may also record it.
        let expected_len = file.size.or_else(|| super::shared_size(&file.path));
        match expected_len.filter(|&n| n != len) {
            Some(expected) => Err(format!(
                "{} has {len} bytes, the backup records {expected}",
                file.path
            )),
            None => Ok(len),
        }
    }

    /// The first file of backup `id` that is damaged, described; `None` when
    /// every file checks (or the meta file cannot be read).
    pub(super) fn damage_in(&self, id: u32) -> Option<String> {
        match self.read_meta(id) {
            Ok(meta) => meta.files.iter().find_map(|f| self.check_file(f)),
            Err(Error::BackupCorrupt { detail, .. }) => Some(detail),
            Err(_) => None,
        }
    }

    /// The ids in `meta/`, ascending: complete backups, loadable or not.
    fn meta_ids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(self.path().join(META_DIR)) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Takes the master's lock on the directory (creating it if needed).
    /// [`Error::BackupDirLocked`] when another process holds it; `Ok(None)`
    /// when the filesystem has no working locks (the lease in the heartbeat
    /// still fences a second master there).
    pub(super) fn take_master_lock(&self) -> Result<Option<fs::File>> {
        fs::create_dir_all(self.path())
            .map_err(|e| Error::io(format!("create {}", self.path().display()), e))?;
        let path = self.path().join(MASTER_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Err(Error::BackupDirLocked {
                path: self.path().to_path_buf(),
                owner: None,
            }),
            Err(fs::TryLockError::Error(e)) => {
                tracing::warn!(
                    error = %e,
                    "cannot lock {}; relying on the heartbeat lease alone",
                    path.display()
                );
                Ok(None)
            }
        }
    }

    /// Checks the files of the retained backups against their crc32c,
    /// going on from `cursor` and reading at most `budget` bytes, so that a
    /// large directory is scrubbed over several calls; wraps around at the
    /// end. Meta files that cannot be parsed count as damaged too.
    pub(super) fn scrub_files(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        let mut files: Vec<(String, meta::MetaFile, Vec<u32>)> = Vec::new();
        let mut damage = Vec::new();
        let mut by_path: HashMap<String, usize> = HashMap::new();
        for id in self.meta_ids() {
            match self.read_meta(id) {
                Ok(meta) => {
                    for file in meta.files {
                        match by_path.get(&file.path) {
                            Some(&i) => files[i].2.push(id),
                            None => {
                                by_path.insert(file.path.clone(), files.len());
                                files.push((file.path.clone(), file, vec![id]));
                            }
                        }
                    }
                }
                Err(Error::BackupCorrupt { detail, .. }) => damage.push(Damage {
                    path: format!("{META_DIR}/{id}"),
                    detail,
                    backups: vec![id],
                }),
                Err(_) => {} // purged meanwhile
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let start = files.partition_point(|f| f.0 <= cursor.after);
        let mut read = 0u64;
        let mut checked = 0usize;
        for (path, file, backups) in files[start..].iter().chain(files[..start].iter()) {
            if read >= budget || checked == files.len() {
                break;
            }
            checked += 1;
            read += fs::metadata(self.path().join(path)).map_or(0, |m| m.len());
            cursor.after = path.clone();
            if let Some(detail) = self.check_file(file) {
                damage.push(Damage {
                    path: path.clone(),
                    detail,
                    backups: backups.clone(),
                });
            }
        }
        cursor.files_checked += checked as u64;
        cursor.bytes_checked += read;
        damage
    }

    /// Removes damaged files from the store, so that the next backup copies
    /// them again from the database (a shared file's name is its content's
    /// identity: a fresh copy is what every backup listing it recorded).
    /// A damaged meta file takes its backup with it, unless it is the
    /// newest: [`BackupSink::drop_incomplete`] drops that one once a newer
    /// backup exists.
    pub(super) fn remove_damaged_files(&self, damage: &[Damage]) -> Result<()> {
        let newest = self.meta_ids().last().copied();
        for d in damage {
            if let Some(id) = d.path.strip_prefix(&format!("{META_DIR}/")) {
                // The newest stays until a newer backup exists, so that its
                // id is never handed out again.
                match id.parse::<u32>() {
                    Ok(id) if Some(id) != newest => self.drop_backup(id)?,
                    _ => {}
                }
                continue;
            }
            let path = self.path().join(&d.path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// Drops every backup but the newest whose files are not all present with
    /// their recorded sizes (after [`BackupSink::remove_damaged`], those whose
    /// damaged file the database no longer has), and the shared files no
    /// backup lists any more. The newest stays so that ids never go back.
    /// Returns the ids dropped.
    pub(super) fn drop_incomplete_backups(&self) -> Result<Vec<u32>> {
        let ids = self.meta_ids();
        let Some(&newest) = ids.last() else {
            return Ok(Vec::new());
        };
        let mut dropped = Vec::new();
        let mut referenced = HashSet::new();
        for &id in &ids {
            let complete = match self.read_meta(id) {
                Ok(meta) => {
                    let complete = meta.files.iter().all(|f| self.present_size(f).is_ok());
                    if complete || id == newest {
                        referenced.extend(meta.files.into_iter().map(|f| f.path));
                    }
                    complete
                }
                Err(_) => false,
            };
            if !complete && id != newest {
                self.drop_backup(id)?;
                dropped.push(id);
            }
        }
        if !dropped.is_empty() {
            for name in self.shared_files() {
                if !referenced.contains(&name) && !name.ends_with(".tmp") {
                    let _ = fs::remove_file(self.path().join(&name));
                }
            }
        }
        Ok(dropped)
    }

    /// Deletes backup `id` as BackupEngine does: its meta file first (the
    /// backup stops existing), then its private files.
    fn drop_backup(&self, id: u32) -> Result<()> {
        let meta = self.meta_path(id);
        match fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", meta.display()), e)),
        }
        let private = self.path().join(PRIVATE_DIR).join(id.to_string());
        match fs::remove_dir_all(&private) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", private.display()), e)),
        }
    }
}

/// The file a "Size mismatch for existing backup file" error names, which
/// RocksDB reports when a shared file in the store was truncated or grown.
pub(super) fn size_mismatch_file(message: &str) -> Option<String> {
    let rest = message
        .split("Size mismatch for existing backup file: ")
        .nth(1)?;
    let name = rest.split_whitespace().next()?;
    Some(name.to_string())
}
