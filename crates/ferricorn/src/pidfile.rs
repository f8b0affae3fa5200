//! The PID file: written atomically at start, removed at exit only if it
//! still holds our PID, refused if another live process owns it.
//!
//! gunicorn counterpart: `gunicorn/pidfile.py` (`Pidfile.create/rename/unlink/validate`).

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("Already running on PID {pid} (or pid file '{path}' is stale)")]
    Running { pid: i32, path: String },
    #[error("Can't write pid file {path}: {err}")]
    Io { path: String, err: io::Error },
}

pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Write `pid` to `path`, refusing if the file names another live process.
    pub fn create(path: &Path, pid: u32) -> Result<Pidfile, PidfileError> {
        if let Some(old) = read_live_pid(path) {
            if old as u32 != pid && old as u32 != parent_pid() {
                return Err(PidfileError::Running {
                    pid: old,
                    path: path.display().to_string(),
                });
            }
        }
        let file = Pidfile {
            path: path.to_path_buf(),
            pid,
        };
        file.write()?;
        Ok(file)
    }

    fn write(&self) -> Result<(), PidfileError> {
        let err = |err| PidfileError::Io {
            path: self.path.display().to_string(),
            err,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            self.pid
        ));
        std::fs::write(&tmp, format!("{}\n", self.pid)).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the pid file to `new_path` (a promoted re-executed master: `PIDFILE.2` → `PIDFILE`).
    pub fn rename(&mut self, new_path: &Path) -> Result<(), PidfileError> {
        self.unlink();
        self.path = new_path.to_path_buf();
        self.write()
    }

    /// Remove the file if it still holds our PID.
    pub fn unlink(&self) {
        if read_pid(&self.path) == Some(self.pid as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_pid() -> u32 {
    nix::unistd::getppid().as_raw() as u32
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The PID in `path` if it names a live process.
fn read_live_pid(path: &Path) -> Option<i32> {
    let pid = read_pid(path)?;
    if pid <= 0 {
        return None;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        let pf = Pidfile::create(&path, std::process::id()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        pf.unlink();
        assert!(!path.exists());
    }

    #[test]
    fn stale_file_is_replaced_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, "999999999\n").unwrap();
        assert!(Pidfile::create(&path, std::process::id()).is_ok());
        // PID 1 is always alive (or EPERM): refused.
        std::fs::write(&path, "1\n").unwrap();
        let err = Pidfile::create(&path, std::process::id())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Already running on PID 1"), "{err}");
    }

    #[test]
    fn unlink_leaves_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        let pf = Pidfile::create(&path, std::process::id()).unwrap();
        std::fs::write(&path, "12345\n").unwrap();
        pf.unlink();
        assert!(path.exists());
    }
}
