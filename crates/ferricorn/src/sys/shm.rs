//! Anonymous shared memory holding an array of `AtomicU64` slots.
//!
//! Created with `MAP_SHARED | MAP_ANONYMOUS` before any fork, so every
//! process forked afterwards shares the same physical pages. Pages are
//! touched lazily, so a large slot count costs only address space.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

pub struct SharedSlots {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the memory is only ever accessed through `&AtomicU64`, which is Sync.
unsafe impl Send for SharedSlots {}
// SAFETY: as above.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    pub fn new(len: usize) -> std::io::Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh anonymous mapping; no existing memory is aliased.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(raw.cast::<AtomicU64>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(SharedSlots {
            ptr,
            len: len.max(1),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot at `i`; `None` past the end.
    pub fn get(&self, i: usize) -> Option<&AtomicU64> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i < len`, the mapping is `len` AtomicU64s long, zero-initialised
        // (a valid AtomicU64), page-aligned, and lives as long as `self`.
        Some(unsafe { &*self.ptr.as_ptr().add(i) })
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `new`; no references
        // outlive `self` because `get` borrows from it.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<AtomicU64>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn slots_are_zeroed_and_writable() {
        let s = SharedSlots::new(1000).unwrap();
        assert_eq!(s.get(999).unwrap().load(Ordering::Relaxed), 0);
        s.get(3).unwrap().store(42, Ordering::Relaxed);
        assert_eq!(s.get(3).unwrap().load(Ordering::Relaxed), 42);
        assert!(s.get(1000).is_none());
    }
}
