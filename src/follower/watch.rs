//! The watch on the backup directory: a wake-up for the apply loop when a
//! backup or heartbeat may have arrived, and nothing else.

use std::path::PathBuf;
use std::sync::mpsc;

/// A filesystem watch on the directories the backup store names (for a
/// directory store: `meta/`, where a complete backup appears as a renamed
/// file, and the directory itself, where the heartbeat is renamed into
/// place). Set up once they all exist.
pub(super) struct MetaWatcher {
    paths: Vec<PathBuf>,
    wake: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
}

/// Whether a filesystem event can mean a new backup or heartbeat: a file
/// created or renamed. Opens and reads are not: the follower's own listing
/// of `meta/` is one, and waking on it would make an idle follower poll
/// itself in a loop. Nor is a dot-file appearing: BackupEngine's
/// `meta/.<id>.tmp` and the heartbeat's temporary file are written first and
/// renamed into place, and only the rename is news.
fn is_news(event: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    let kind = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    let hidden = |p: &std::path::PathBuf| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    kind && (event.paths.is_empty() || !event.paths.iter().all(hidden))
}

impl MetaWatcher {
    pub(super) fn new(paths: Vec<PathBuf>, wake: mpsc::Sender<()>) -> MetaWatcher {
        let mut watcher = MetaWatcher {
            paths,
            wake,
            watcher: None,
        };
        watcher.ensure();
        watcher
    }

    /// Starts watching once every path exists, if no watch is on yet.
    pub(super) fn ensure(&mut self) {
        use notify::Watcher;
        if self.watcher.is_some() || self.paths.is_empty() || !self.paths.iter().all(|p| p.is_dir())
        {
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
        for dir in &self.paths {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, "cannot watch {}; relying on polling", dir.display());
                return;
            }
        }
        tracing::debug!(paths = ?self.paths, "watching the backup store");
        self.watcher = Some(watcher);
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
        // A temporary file appearing is not news; its rename into place is.
        let at = |kind, path: &str| notify::Event::new(kind).add_path(path.into());
        assert!(!is_news(&at(
            EventKind::Create(CreateKind::File),
            "/b/.rkv-heartbeat.json.tmp"
        )));
        assert!(is_news(&at(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/b/rkv-heartbeat.json"
        )));
        assert!(is_news(
            &at(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                "/b/meta/.7.tmp"
            )
            .add_path("/b/meta/7".into())
        ));
        // The follower's own listing of meta/ must not wake it.
        assert!(!is_news(&event(EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        )))));
        assert!(!is_news(&event(EventKind::Access(AccessKind::Close(
            notify::event::AccessMode::Read
        )))));
    }
}
