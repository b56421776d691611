//! The watch on the backup directory: a wake-up for the apply loop when a
//! backup or heartbeat may have arrived, and nothing else.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// A filesystem watch on the backup directory's `meta/`, where a complete
/// backup appears as a renamed file, and on the directory itself, where the
/// master's heartbeat is renamed into place every second. Set up once
/// `meta/` exists.
pub(super) struct MetaWatcher {
    backup_dir: PathBuf,
    wake: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
}

/// Whether a filesystem event can mean a new backup or heartbeat: a file
/// created or renamed. Opens and reads are not: the follower's own listing
/// of `meta/` is one, and waking on it would make an idle follower poll
/// itself in a loop.
fn is_news(event: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    )
}

impl MetaWatcher {
    pub(super) fn new(backup_dir: &Path, wake: mpsc::Sender<()>) -> MetaWatcher {
        let mut watcher = MetaWatcher {
            backup_dir: backup_dir.to_path_buf(),
            wake,
            watcher: None,
        };
        watcher.ensure();
        watcher
    }

    /// Starts watching if `meta/` exists and no watch is on yet.
    pub(super) fn ensure(&mut self) {
        use notify::Watcher;
        let meta = self.backup_dir.join("meta");
        if self.watcher.is_some() || !meta.is_dir() {
            return;
        }
        let wake = self.wake.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| is_news(&e)) {
                let _ = wake.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, "no filesystem watcher; relying on polling");
                return;
            }
        };
        for dir in [&meta, &self.backup_dir] {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, "cannot watch {}; relying on polling", dir.display());
                return;
            }
        }
        tracing::debug!("watching {}", meta.display());
        self.watcher = Some(watcher);
    }

    pub(super) fn wake(&self) {
        let _ = self.wake.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_creates_and_renames_wake_the_follower() {
        use notify::event::{AccessKind, CreateKind, EventKind, ModifyKind, RenameMode};
        let event = |kind| notify::Event::new(kind);
        assert!(is_news(&event(EventKind::Create(CreateKind::File))));
        assert!(is_news(&event(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        // The follower's own listing of meta/ must not wake it.
        assert!(!is_news(&event(EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        )))));
        assert!(!is_news(&event(EventKind::Access(AccessKind::Close(
            notify::event::AccessMode::Read
        )))));
    }
}
