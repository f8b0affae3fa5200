//! The `Date` response header, formatted at most once per second.
//!
//! gunicorn counterpart: `util.http_date()`, which formats on every
//! response; here the 29-byte IMF-fixdate is cached and only re-rendered
//! when the wall-clock second changes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// A cached IMF-fixdate. Call [`DateCache::refresh`] before building a
/// response (cheap when the second has not changed), then [`DateCache::get`].
/// Not shared between threads: give each thread its own.
#[derive(Clone, Debug)]
pub struct DateCache {
    bytes: [u8; DATE_LEN],
    second: u64,
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> Self {
        let mut cache = DateCache {
            bytes: [b' '; DATE_LEN],
            second: u64::MAX,
        };
        cache.refresh();
        cache
    }

    /// Re-render if the current second differs from the cached one.
    pub fn refresh(&mut self) {
        self.refresh_at(SystemTime::now());
    }

    /// Re-render for `now` if its second differs from the cached one.
    pub fn refresh_at(&mut self, now: SystemTime) {
        let second = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second == self.second {
            return;
        }
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        if text.len() == DATE_LEN {
            self.bytes.copy_from_slice(text.as_bytes());
            self.second = second;
        }
    }

    /// The cached date, e.g. `b"Sun, 06 Nov 1994 08:49:37 GMT"`.
    pub fn get(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        let mut d = DateCache::new();
        d.refresh_at(UNIX_EPOCH + Duration::from_secs(784_111_777));
        assert_eq!(d.get(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.refresh_at(UNIX_EPOCH + Duration::from_millis(784_111_777_900));
        assert_eq!(d.get(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.refresh_at(UNIX_EPOCH + Duration::from_secs(784_111_778));
        assert_eq!(d.get(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }

    #[test]
    fn now_has_right_shape() {
        let d = DateCache::new();
        assert_eq!(d.get().len(), DATE_LEN);
        assert!(d.get().ends_with(b" GMT"));
    }
}
