//! File watching (`watch:`): one event source of the supervisor's loop.
//!
//! One inotify instance for every watching service, read through tokio's
//! reactor: with nothing changing, no thread and no timer wakes up. Each
//! directory below a watched path gets its own (non-recursive) watch, added
//! by walking the tree — and the walk never enters an ignored directory, so
//! a `node_modules` of 100,000 files costs nothing. (inotify has no
//! recursive mode; the `notify` crate's recursive mode walks everything and
//! filters events afterwards, and would add a thread — hence nix's inotify,
//! already a dependency.) Directories created or moved in later are walked
//! and watched the same way.
//!
//! A change to a service's paths opens a window of its debounce; what else
//! changes meanwhile joins it, and at its end the service gets one
//! [`Change`]. The window is not extended by later changes: a saved file
//! restarts the service `debounce` after the save, however busy the tree.

use crate::config::watch::Watch;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How many changed paths a [`Change`] keeps to show; the rest are counted.
const SHOWN: usize = 3;

/// What changed for one service in one debounce window.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub svc: usize,
    /// The first paths that changed, relative to the stack file's directory.
    pub paths: Vec<PathBuf>,
    /// How many distinct paths changed in all.
    pub count: usize,
}

impl Change {
    /// `src/app.js`, `src/app.js (+2 more)`: for the reload line.
    pub fn summary(&self) -> String {
        let mut s = self
            .paths
            .first()
            .map_or_else(|| "something".into(), |p| p.display().to_string());
        if self.count > 1 {
            s.push_str(&format!(" (+{} more)", self.count - 1));
        }
        s
    }

    /// Another window's change, while the first one waits its turn.
    pub fn merge(&mut self, other: Change) {
        let mut known = 0;
        for p in other.paths {
            if self.paths.contains(&p) {
                known += 1;
            } else if self.paths.len() < SHOWN {
                self.paths.push(p);
            }
        }
        self.count += other.count - known;
    }
}

/// One watching service.
pub struct Rule {
    pub svc: usize,
    pub watch: Watch,
}

/// The watched files and directories of every rule, and the windows open.
struct Watcher {
    fd: AsyncFd<Fd>,
    rules: Vec<Rule>,
    /// Paths ignored whatever the rules say: cogno's data directory, whose
    /// servers and logs write all the time.
    never: Vec<PathBuf>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    /// Per rule, per watched path: whether it is a directory (else a file),
    /// as found at the start rather than asked of the disk at each event.
    kinds: Vec<Vec<bool>>,
    /// The limit of inotify watches was reached: said once.
    full: bool,
    /// Per rule: its window's end and the paths seen in it.
    open: Vec<Option<(Instant, Vec<PathBuf>)>>,
}

/// What inotify reports: a file written and closed, an entry created,
/// deleted or moved (an editor's save by rename), a directory gone.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ONLYDIR
}

/// The inotify descriptor, for tokio's reactor.
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// What woke the watcher.
enum Wake {
    Events(Vec<InotifyEvent>),
    /// A debounce window is over.
    Due,
    Broken(std::io::Error),
}

/// Watches every rule's paths and calls `changed` once per debounce window
/// with what changed; runs until the returned task is aborted. Must be
/// called within the tokio runtime.
pub fn start(
    rules: Vec<Rule>,
    never: Vec<PathBuf>,
    changed: impl Fn(Change) + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    // SAFETY: `Fd` owns the Inotify, which owns its descriptor: it stays open,
    // and `as_raw_fd` returns it, for as long as the AsyncFd holds the Fd.
    let fd = unsafe { AsyncFd::register_with_interest(Fd(inotify), Interest::READABLE)? };
    let mut w = Watcher {
        fd,
        open: rules.iter().map(|_| None).collect(),
        kinds: rules
            .iter()
            .map(|r| r.watch.paths.iter().map(|p| p.is_dir()).collect())
            .collect(),
        full: false,
        rules,
        never,
        dirs: HashMap::new(),
    };
    for r in 0..w.rules.len() {
        for (root, is_dir) in w.rules[r]
            .watch
            .paths
            .clone()
            .into_iter()
            .zip(w.kinds[r].clone())
        {
            if is_dir {
                w.walk(&root);
            } else if let Some(dir) = root.parent() {
                // A watched file is seen through its directory: an editor
                // that saves by writing a new file and renaming it over the
                // old one would leave a watch on the file watching nothing.
                w.add(dir);
            }
        }
    }
    debug!("watching {} directories", w.dirs.len());
    Ok(tokio::spawn(w.run(changed)))
}

/// The next batch of events; waits in the reactor, never polls.
async fn read(fd: &AsyncFd<Fd>) -> Wake {
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => return Wake::Broken(e),
        };
        match guard.get_inner().0.read_events() {
            Ok(events) => return Wake::Events(events),
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Wake::Broken(e.into()),
        }
    }
}

impl Watcher {
    async fn run(mut self, changed: impl Fn(Change)) {
        loop {
            let due = self.open.iter().flatten().map(|(t, _)| *t).min();
            let until_due = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                wake = read(&self.fd) => wake,
                () = until_due => Wake::Due,
            };
            match wake {
                Wake::Events(events) => {
                    for ev in events {
                        self.on_event(ev.wd, ev.mask, ev.name.as_deref());
                    }
                }
                Wake::Due => self.close_windows(&changed),
                Wake::Broken(e) => {
                    warn!("watch: cannot read file changes any more: {e}");
                    return;
                }
            }
        }
    }

    /// Tells each rule whose window is over what changed in it.
    fn close_windows(&mut self, changed: &impl Fn(Change)) {
        let now = Instant::now();
        for (r, open) in self.open.iter_mut().enumerate() {
            let Some((_, seen)) = open.take_if(|(t, _)| *t <= now) else {
                continue;
            };
            let base = &self.rules[r].watch.base;
            let paths = seen
                .iter()
                .take(SHOWN)
                .map(|p| p.strip_prefix(base).unwrap_or(p).to_path_buf())
                .collect();
            changed(Change {
                svc: self.rules[r].svc,
                paths,
                count: seen.len(),
            });
        }
    }

    fn inotify(&self) -> &Inotify {
        &self.fd.get_ref().0
    }

    /// Watches `dir` itself (not below it).
    fn add(&mut self, dir: &Path) {
        match self.inotify().add_watch(dir, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
            }
            // ENOSPC: fs.inotify.max_user_watches is reached.
            Err(nix::errno::Errno::ENOSPC) if !self.full => {
                self.full = true;
                warn!(
                    "watch: cannot watch {} (and maybe more): the limit of inotify watches is \
                     reached (raise fs.inotify.max_user_watches, or ignore more directories)",
                    dir.display()
                );
            }
            // Gone already, or not a directory any more: nothing to watch.
            Err(e) => debug!("watch: cannot watch {}: {e}", dir.display()),
        }
    }

    /// Watches `dir` and every directory below it that some rule does not
    /// ignore, without following symbolic links (no loops).
    fn walk(&mut self, dir: &Path) {
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            if !self.wanted(&d) {
                continue;
            }
            self.add(&d);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
    }

    /// Whether some rule watches `dir` (below one of its directories, not ignored).
    fn wanted(&self, dir: &Path) -> bool {
        (0..self.rules.len()).any(|r| self.covers(r, dir))
    }

    /// Whether a change to `path` concerns rule `r`.
    fn covers(&self, r: usize, path: &Path) -> bool {
        if self.never.iter().any(|n| path.starts_with(n)) {
            return false;
        }
        let w = &self.rules[r].watch;
        let relative = path.strip_prefix(&w.base).unwrap_or(path);
        w.paths.iter().zip(&self.kinds[r]).any(|(root, &is_dir)| {
            if is_dir {
                path.starts_with(root) && !w.ignore.ignores(root, path, relative)
            } else {
                path == root
            }
        })
    }

    fn on_event(&mut self, wd: WatchDescriptor, mask: AddWatchFlags, name: Option<&OsStr>) {
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            // Changes were lost: every service may have been concerned.
            warn!("watch: too many changes at once, some were not seen: restarting every watching service");
            for r in 0..self.rules.len() {
                let base = self.rules[r].watch.base.clone();
                self.note(r, base);
            }
            return;
        }
        if mask.contains(AddWatchFlags::IN_IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        let path = match name {
            Some(n) => dir.join(n),
            None => dir.clone(),
        };
        let is_dir = mask.contains(AddWatchFlags::IN_ISDIR);
        if is_dir && mask.contains(AddWatchFlags::IN_MOVED_FROM) {
            // Its watches would report under a path that no longer exists.
            let gone: Vec<WatchDescriptor> = self
                .dirs
                .iter()
                .filter(|(_, d)| d.starts_with(&path))
                .map(|(wd, _)| *wd)
                .collect();
            for wd in gone {
                let _ = self.inotify().rm_watch(wd);
                self.dirs.remove(&wd);
            }
        }
        if is_dir && mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            self.walk(&path);
        }
        for r in 0..self.rules.len() {
            if self.covers(r, &path) {
                self.note(r, path.clone());
            }
        }
    }

    /// Rule `r` saw `path` change: opens its window, or adds to the open one.
    fn note(&mut self, r: usize, path: PathBuf) {
        let debounce = self.rules[r].watch.debounce;
        let (_, seen) = self.open[r].get_or_insert_with(|| (Instant::now() + debounce, Vec::new()));
        if !seen.contains(&path) {
            seen.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(paths: &[&str], count: usize) -> Change {
        Change {
            svc: 0,
            paths: paths.iter().map(PathBuf::from).collect(),
            count,
        }
    }

    #[test]
    fn the_summary_names_the_first_path_and_counts_the_others() {
        assert_eq!(change(&["src/a.js"], 1).summary(), "src/a.js");
        assert_eq!(
            change(&["src/a.js", "src/b.js", "src/c.js"], 7).summary(),
            "src/a.js (+6 more)"
        );
    }

    #[test]
    fn a_later_window_merges_without_counting_a_path_twice() {
        let mut first = change(&["a", "b"], 2);
        first.merge(change(&["b", "c", "d"], 5));
        // b was seen already; c joins the shown paths, d and two unshown ones are counted.
        assert_eq!(first.paths, [PathBuf::from("a"), "b".into(), "c".into()]);
        assert_eq!(first.count, 6);
    }
}
