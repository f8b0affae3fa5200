//! Process tests: start the real server (`python -m ferricorn`) on real
//! sockets and drive it with signals. Every wait has a deadline; every server
//! runs in its own process group, killed on drop.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRICORN_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/apps")
}

struct Server {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
        let mut cmd = Command::new(python());
        cmd.args(["-m", "ferricorn"])
            .args(args)
            .current_dir(dir.path())
            .env("PYTHONPATH", apps_dir())
            // Each server its own default control socket, never the user's.
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn python -m ferricorn");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cv) = &*lines;
                    lock.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        Server {
            child,
            lines,
            _dir: dir,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Wait until `needle` appears at least `n` times in the log.
    fn wait_count(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.lines;
        let mut guard = lock.lock().unwrap();
        loop {
            if guard.iter().filter(|l| l.contains(needle)).count() >= n {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {n}x {needle:?}; log:\n{}",
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn wait_line(&self, needle: &str) -> String {
        self.wait_count(needle, 1, Duration::from_secs(20));
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
            .unwrap_or_default()
    }

    fn port(&self) -> u16 {
        let line = self.wait_line("Listening at: http://");
        let addr = line
            .split("Listening at: http://")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn live_workers(srv: &Server) -> Vec<i32> {
    // Children of the master, from /proc.
    let master = srv.pid().as_raw();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap_or(0) + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(master) && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

fn wait_workers(srv: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while live_workers(srv).len() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} workers, have {:?}; log:\n{}",
            live_workers(srv),
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_and_stops_on_term_with_pidfile() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("m.pid");
    let mut srv = Server::start_in(
        dir,
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "-p",
            pidfile.to_str().unwrap(),
            "basic:app",
        ],
    );
    let port = srv.port();
    srv.wait_count("Booting worker with pid", 2, Duration::from_secs(20));
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        srv.pid().to_string()
    );
    assert!(get(port, "/").ends_with("Hello, world!"));
    srv.signal(Signal::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), 0);
    assert!(!pidfile.exists());
    assert!(srv.log().contains("Shutting down: Master"));
}

#[test]
fn ttin_and_ttou_change_worker_count() {
    let srv = Server::start(&["-b", "127.0.0.1:0", "-w", "2", "basic:app"]);
    srv.port();
    wait_workers(&srv, 2);
    srv.signal(Signal::SIGTTIN);
    wait_workers(&srv, 3);
    srv.signal(Signal::SIGTTOU);
    wait_workers(&srv, 2);
    srv.signal(Signal::SIGTTOU);
    wait_workers(&srv, 1);
    srv.signal(Signal::SIGTTOU);
    srv.wait_count("Handling signal: ttou", 3, Duration::from_secs(10));
    // Never below one.
    wait_workers(&srv, 1);
    assert!(srv.count("Handling signal: ttin") == 1);
}

#[test]
fn usr1_reopens_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let access = dir.path().join("access.log");
    let srv = Server::start_in(
        dir,
        &[
            "-b",
            "127.0.0.1:0",
            "--error-logfile",
            log.to_str().unwrap(),
            "--access-logfile",
            access.to_str().unwrap(),
            "basic:app",
        ],
    );
    // The log goes to the file: wait for the Listening line there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("Listening at: http://127.0.0.1:").nth(1) {
            if text.contains("Booting worker") {
                break rest.split(' ').next().unwrap().parse::<u16>().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no Listening line in {}", text);
        std::thread::sleep(Duration::from_millis(20));
    };
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::rename(&access, access.with_extension("log.1")).unwrap();
    srv.signal(Signal::SIGUSR1);
    // The workers reopen too: their access lines land in the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        get(port, "/");
        if std::fs::read_to_string(&access)
            .unwrap_or_default()
            .contains("\"GET / HTTP/1.1\" 200")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not reopen the access log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn boot_failure_exits_3_without_fork_loop() {
    let mut srv = Server::start(&["-b", "127.0.0.1:0", "-w", "2", "broken_import:app"]);
    assert_eq!(srv.wait_exit(Duration::from_secs(30)), 3);
    assert!(
        srv.log().contains("Reason: Worker failed to boot."),
        "{}",
        srv.log()
    );
    assert!(srv.count("Booting worker with pid") <= 2);
}
