//! `--reload`: a thread in each worker that watches the source of every
//! imported module (`.pyc` read as `.py`) plus `--reload-extra-file` paths
//! and patterns, and on a change logs `Worker reloading: PATH modified`,
//! runs `worker_int` and stops the worker as `TERM` does (requests in
//! progress finish); the master forks a fresh worker, which imports the new
//! code.
//!
//! Engines (`--reload-engine`): `inotify` watches the directories of those
//! files and sleeps until the kernel reports an event on one of them; `poll`
//! compares modification times once a second; `auto` is inotify when the
//! kernel offers it. Either way the file list is refreshed about once a
//! second (a short GIL hold, and only when `sys.modules` grew or a pattern
//! is configured), so an idle server costs no measurable CPU and a change is
//! seen within a second. An inotify event starts a short quiet period
//! (`SETTLE`), so a save written in several steps, or a temp file renamed
//! over the original, restarts the worker once and only after it is complete.
//!
//! Invariants: the thread blocks every signal (they stay the worker's main
//! thread's business) and only ever signals its own process; the master
//! has no such thread.
//!
//! gunicorn counterpart: `gunicorn/reloader.py` (`Reloader`,
//! `InotifyReloader`) and the `changed` callback of `Worker.init_process`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::glogging;

/// How often the file list is refreshed and (`poll`) the files checked.
const INTERVAL: Duration = Duration::from_secs(1);
/// After an inotify event, wait until the directory is quiet this long.
const SETTLE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Poll,
    Inotify,
}

/// `--reload-engine` to an engine; `auto` prefers inotify.
pub fn engine(name: &str) -> Engine {
    match name {
        "poll" => Engine::Poll,
        _ => Engine::Inotify,
    }
}

/// What the watcher needs: the extra entries as given and files known to
/// matter beyond `sys.modules` (those of a failed import).
pub struct Watch {
    pub engine: Engine,
    pub extra: Vec<String>,
    pub also: Vec<String>,
}

/// Take the first look (the file list, and inotify watches or modification
/// times) in the calling thread, so a change made as soon as the worker
/// serves is seen; then watch on a thread of its own. Errors only when the
/// thread cannot be made.
pub fn start(watch: Watch) -> std::io::Result<()> {
    let mut files = Files::new(&watch);
    files.refresh();
    let mut engine = match watch.engine {
        Engine::Inotify => match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(ino) => State::Inotify(Watches::new(ino)),
            Err(e) => {
                glogging::warning!("inotify unavailable ({e}); the reloader polls instead");
                State::Poll(HashMap::new())
            }
        },
        Engine::Poll => State::Poll(HashMap::new()),
    };
    match &mut engine {
        State::Inotify(w) => w.add(&files.set),
        State::Poll(seen) => {
            changed_file(&files.set, seen);
        }
    }
    std::thread::Builder::new()
        .name("reloader".into())
        .spawn(move || {
            let _ = crate::sys::signals::block_all();
            let changed = match engine {
                State::Inotify(w) => watch_inotify(files, w),
                State::Poll(seen) => watch_poll(files, seen),
            };
            glogging::info!("Worker reloading: {} modified", changed.display());
            crate::workers::worker_int();
            // A graceful stop, as TERM: requests in progress finish.
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGTERM);
        })
        .map(|_| ())
}

enum State {
    Inotify(Watches),
    /// Modification times seen so far.
    Poll(HashMap<PathBuf, SystemTime>),
}

/// The files to watch, refreshed from Python when something may have changed.
struct Files {
    extra: Vec<String>,
    also: Vec<PathBuf>,
    known_modules: i64,
    set: BTreeSet<PathBuf>,
    /// A symlink's resolved target, to the watched link.
    targets: HashMap<PathBuf, PathBuf>,
}

impl Files {
    fn new(watch: &Watch) -> Files {
        Files {
            extra: watch.extra.clone(),
            also: watch.also.iter().map(PathBuf::from).collect(),
            known_modules: -1,
            set: BTreeSet::new(),
            targets: HashMap::new(),
        }
    }

    /// Refresh; true when the list changed.
    /// The watched file an event at `path` concerns, if any.
    fn watched(&self, path: PathBuf) -> Option<PathBuf> {
        if self.set.contains(&path) {
            return Some(path);
        }
        self.targets.get(&path).cloned()
    }

    fn refresh(&mut self) -> bool {
        let got = Python::attach(|py| -> PyResult<Option<(i64, Vec<String>)>> {
            let r = py
                .import("ferricorn._reload")?
                .call_method1("snapshot", (self.extra.clone(), self.known_modules))?;
            if r.is_none() {
                return Ok(None);
            }
            Ok(Some(r.cast_into::<PyTuple>()?.extract()?))
        });
        match got {
            Ok(Some((n, files))) => {
                self.known_modules = n;
                let mut set: BTreeSet<PathBuf> = files.into_iter().map(PathBuf::from).collect();
                set.extend(self.also.iter().cloned());
                let changed = set != self.set;
                if changed {
                    self.targets = set
                        .iter()
                        .filter(|f| f.is_symlink())
                        .filter_map(|f| Some((std::fs::canonicalize(f).ok()?, f.clone())))
                        .collect();
                }
                self.set = set;
                changed
            }
            Ok(None) => false,
            Err(e) => {
                glogging::debug!("reloader: cannot list the watched files: {e}");
                false
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The first file whose modification time moved past the one recorded; a
/// file seen for the first time only records its time.
fn changed_file(
    files: &BTreeSet<PathBuf>,
    seen: &mut HashMap<PathBuf, SystemTime>,
) -> Option<PathBuf> {
    for path in files {
        let Some(t) = mtime(path) else { continue };
        match seen.get(path) {
            Some(old) if t > *old => return Some(path.clone()),
            Some(_) => {}
            None => {
                seen.insert(path.clone(), t);
            }
        }
    }
    None
}

/// gunicorn's `Reloader`: compare modification times once a second.
fn watch_poll(mut files: Files, mut seen: HashMap<PathBuf, SystemTime>) -> PathBuf {
    loop {
        std::thread::sleep(INTERVAL);
        files.refresh();
        if let Some(path) = changed_file(&files.set, &mut seen) {
            return path;
        }
    }
}

/// inotify watches on directories, by watch descriptor.
struct Watches {
    ino: Inotify,
    dirs: BTreeMap<i32, PathBuf>,
    watched: BTreeSet<PathBuf>,
}

impl Watches {
    fn new(ino: Inotify) -> Watches {
        Watches {
            ino,
            dirs: BTreeMap::new(),
            watched: BTreeSet::new(),
        }
    }

    /// Watch the directories of `files` not watched yet.
    fn add(&mut self, files: &BTreeSet<PathBuf>) {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO;
        for dir in dirs_of(files) {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.ino.add_watch(dir.as_path(), mask) {
                Ok(wd) => {
                    self.dirs.insert(wd.as_raw(), dir.clone());
                }
                Err(e) => glogging::debug!("reloader: cannot watch {}: {e}", dir.display()),
            }
            self.watched.insert(dir);
        }
    }
}

/// Sleep until an event names a watched file (or a symlink's target), then
/// until its directory is quiet for `SETTLE`; refresh the list each second.
fn watch_inotify(mut files: Files, mut w: Watches) -> PathBuf {
    let mut next_refresh = Instant::now() + INTERVAL;
    let mut hit: Option<(PathBuf, Instant)> = None;
    loop {
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh = now + INTERVAL;
            if files.refresh() {
                w.add(&files.set);
            }
        }
        let wait = match &hit {
            Some((_, at)) => (*at + SETTLE).saturating_duration_since(now),
            None => next_refresh.saturating_duration_since(now),
        };
        let ready = {
            let mut fds = [PollFd::new(w.ino.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX).max(1);
            matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
        };
        if ready {
            for ev in w.ino.read_events().unwrap_or_default() {
                let (Some(dir), Some(name)) = (w.dirs.get(&ev.wd.as_raw()), ev.name.as_ref())
                else {
                    continue;
                };
                if let Some(path) = files.watched(dir.join(name)) {
                    // Settle: restart the quiet period on every event.
                    hit = Some((path, Instant::now()));
                } else if let Some((_, at)) = hit.as_mut() {
                    *at = Instant::now();
                }
            }
        }
        if let Some((path, at)) = &hit {
            if at.elapsed() >= SETTLE {
                return path.clone();
            }
        }
    }
}

/// The directories to watch for `files`: each file's, and for a symlink
/// its target's (an edit of the target is an event there, not at the link).
fn dirs_of(files: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in files {
        if let Some(d) = f.parent() {
            dirs.insert(d.to_path_buf());
        }
        if f.is_symlink() {
            if let Some(d) = std::fs::canonicalize(f)
                .ok()
                .and_then(|t| t.parent().map(Path::to_path_buf))
            {
                dirs.insert(d);
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines() {
        assert_eq!(engine("poll"), Engine::Poll);
        assert_eq!(engine("inotify"), Engine::Inotify);
        assert_eq!(engine("auto"), Engine::Inotify);
    }

    #[test]
    fn dirs_include_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("m.py"), b"").unwrap();
        let link = dir.path().join("m.py");
        std::os::unix::fs::symlink(real.join("m.py"), &link).unwrap();
        let dirs = dirs_of(&[link].into_iter().collect());
        let real = std::fs::canonicalize(real).unwrap();
        assert!(dirs.contains(dir.path()));
        assert!(dirs.contains(&real));
    }
}
