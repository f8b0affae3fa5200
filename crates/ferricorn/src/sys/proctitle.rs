//! Process titles, as gunicorn shows them with `setproctitle` installed:
//! `ferricorn: master [NAME]` and `ferricorn: worker [NAME]` in
//! `/proc/PID/cmdline` and `ps`, and the first 15 bytes in
//! `/proc/PID/comm` (`top`, `ps -o comm`).
//!
//! How (Linux): the kernel shows `cmdline` from the memory between the
//! process's `arg_start` and `arg_end` (fields 48 and 49 of
//! `/proc/self/stat`), the `argv` strings on the initial stack. We overwrite
//! that area with the title and pad it with NULs, as the `setproctitle`
//! package does; a title longer than the area is truncated. Nothing reads
//! the original `argv` after startup: Python keeps its own copies
//! (`sys.argv`, `sys.orig_argv`, which `USR2` re-exec uses). `comm` is set
//! with `prctl(PR_SET_NAME)`.
//!
//! When the `setproctitle` package is installed, `hooks::set_proctitle`
//! sets titles through it instead (so hook code that reads or changes the
//! title with it sees ferricorn's), and only `comm` is set here.
//!
//! Invariant: called only while the process has a single thread (the master
//! always; a worker right after fork), so no other thread reads the area
//! while it is rewritten. Elsewhere than Linux, `set` does nothing.
//!
//! gunicorn counterpart: `util._setproctitle` (via `setproctitle`).

/// Set the whole title (`ferricorn: master [NAME]`): the argv area and `comm`.
pub fn set(full: &str) {
    imp::set(full);
    imp::set_comm(full);
}

/// Set only `comm`, the first 15 bytes of the title.
pub fn set_comm(full: &str) {
    imp::set_comm(full);
}

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::OnceLock;

    /// `(arg_start, arg_end)`, read once (a forked worker inherits the same
    /// addresses).
    static AREA: OnceLock<Option<(usize, usize)>> = OnceLock::new();

    /// The argv area from `/proc/self/stat` text: fields 48 and 49, counted
    /// after the `(comm)` field, which may itself contain spaces.
    pub(super) fn parse_area(stat: &str) -> Option<(usize, usize)> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        let start: usize = fields.get(48 - 3)?.parse().ok()?;
        let end: usize = fields.get(49 - 3)?.parse().ok()?;
        // A sane, non-empty area (the kernel caps argv well below 1 GiB).
        (start > 0 && end > start && end - start < (1 << 30)).then_some((start, end))
    }

    fn area() -> Option<(usize, usize)> {
        *AREA.get_or_init(|| {
            std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| parse_area(&s))
                .filter(|&(start, end)| argv_is_ours(start, end))
        })
    }

    /// Whether the kernel's argv area starts with this program's own
    /// `argv[0]`. Under a launcher that loads the program itself (valgrind)
    /// the area is the launcher's: overwriting it would corrupt the
    /// launcher's options, which it reads again at `fork` (callgrind's
    /// `--callgrind-out-file`). Called once, before any title is written.
    fn argv_is_ours(start: usize, end: usize) -> bool {
        let Some(arg0) = std::env::args_os().next() else {
            return false;
        };
        let want = std::os::unix::ffi::OsStrExt::as_bytes(arg0.as_os_str());
        if want.len() >= end - start {
            return false;
        }
        // SAFETY: [start, end) is this process's argv block as reported by
        // the kernel (mapped and readable: the initial stack); we read
        // `want.len() + 1 < end - start` bytes from `start`, and the module
        // invariant (single thread) means nobody writes it meanwhile.
        let have = unsafe { std::slice::from_raw_parts(start as *const u8, want.len() + 1) };
        have[..want.len()] == *want && have[want.len()] == 0
    }

    pub(super) fn set(title: &str) {
        if let Some((start, end)) = area() {
            let len = end - start;
            let n = title.len().min(len - 1);
            // SAFETY: [arg_start, arg_end) is this process's argv block, as
            // reported by the kernel: mapped, writable (initial stack) and
            // owned by no Rust object; Python holds only copies of argv. The
            // module invariant (single thread) rules out concurrent readers in
            // this process. We write exactly `len` bytes from `start`.
            unsafe {
                let base = start as *mut u8;
                std::ptr::copy_nonoverlapping(title.as_ptr(), base, n);
                std::ptr::write_bytes(base.add(n), 0, len - n);
            }
        }
    }

    pub(super) fn set_comm(title: &str) {
        let mut comm: Vec<u8> = title.bytes().filter(|b| *b != 0).take(15).collect();
        comm.push(0);
        if let Ok(name) = std::ffi::CStr::from_bytes_with_nul(&comm) {
            let _ = nix::sys::prctl::set_name(name);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn set(_title: &str) {}
    pub(super) fn set_comm(_title: &str) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::parse_area;

    #[test]
    fn stat_fields_48_and_49() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1064".into();
        let stat = format!("42 (a (weird) name) {}", fields.join(" "));
        assert_eq!(parse_area(&stat), Some((1000, 1064)));
        assert_eq!(parse_area("42 (x) S 1 2"), None);
        fields[49 - 3] = "900".into();
        let stat = format!("42 (x) {}", fields.join(" "));
        assert_eq!(parse_area(&stat), None);
    }

    #[test]
    fn own_stat_has_an_area() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_area(&stat).is_some());
    }
}
