//! Exit codes and top-level error types.
//!
//! gunicorn counterpart: `Arbiter.WORKER_BOOT_ERROR` (3), `APP_LOAD_ERROR` (4).

/// A worker that could not boot (e.g. the app raised on import).
pub const WORKER_BOOT_ERROR: i32 = 3;
/// A worker whose application could not be found or loaded.
pub const APP_LOAD_ERROR: i32 = 4;
/// Bad command line or configuration (argparse's exit status).
pub const USAGE_ERROR: i32 = 2;
/// Any other start-up failure of the master.
pub const STARTUP_ERROR: i32 = 1;
