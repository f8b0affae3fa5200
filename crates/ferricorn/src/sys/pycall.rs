//! Two CPython calls pyo3 has no safe form of, for the asgi worker's
//! request path: resuming a coroutine without a `StopIteration` object
//! (`PyIter_Send`), and a call with one keyword argument without building
//! a dict (vectorcall with `kwnames`).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// What one resumption of a coroutine gave.
pub enum Sent<'py> {
    /// It waits on this (a future, or `None` for a bare yield).
    Yielded(Bound<'py, PyAny>),
    /// It returned this.
    Returned(Bound<'py, PyAny>),
}

/// `coro.send(None)` (or `next(coro)`), as asyncio's task step does it:
/// a native coroutine's return does not build a `StopIteration`.
pub fn send_none<'py>(coro: &Bound<'py, PyAny>) -> PyResult<Sent<'py>> {
    let py = coro.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `coro` and `None` are live references held across the call
    // (the GIL is held: `py`); `PyIter_Send` stores a new (owned)
    // reference in `result` for PYGEN_NEXT and PYGEN_RETURN and leaves it
    // NULL with an exception set for PYGEN_ERROR.
    let status = unsafe { ffi::PyIter_Send(coro.as_ptr(), py.None().as_ptr(), &mut result) };
    match status {
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
        // SAFETY: an owned, non-NULL reference (see above).
        ffi::PySendResult::PYGEN_NEXT => {
            Ok(Sent::Yielded(unsafe { Bound::from_owned_ptr(py, result) }))
        }
        // SAFETY: as above.
        ffi::PySendResult::PYGEN_RETURN => {
            Ok(Sent::Returned(unsafe { Bound::from_owned_ptr(py, result) }))
        }
    }
}

/// `f(arg, <kwname>=kwarg)` where `kwnames` is the one-item tuple
/// `(kwname,)`, by vectorcall: no kwargs dict per call.
pub fn call_with_keyword<'py>(
    f: &Bound<'py, PyAny>,
    arg: &Bound<'py, PyAny>,
    kwarg: &Bound<'py, PyAny>,
    kwnames: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = f.py();
    debug_assert_eq!(kwnames.len(), 1);
    // One slot before the arguments, which PY_VECTORCALL_ARGUMENTS_OFFSET
    // lets the callee borrow (to prepend `self` for a bound method).
    let mut args = [std::ptr::null_mut(), arg.as_ptr(), kwarg.as_ptr()];
    // SAFETY: `f`, `arg`, `kwarg` and `kwnames` are live references held
    // across the call (GIL held); `args[1..]` holds one positional and one
    // keyword value, matching `nargs` = 1 and the one name in `kwnames`;
    // the offset flag allows the callee to write `args[0]`, which we own.
    // The call returns a new reference or NULL with an exception set.
    let r = unsafe {
        ffi::PyObject_Vectorcall(
            f.as_ptr(),
            args.as_mut_ptr().add(1),
            1 | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            kwnames.as_ptr(),
        )
    };
    if r.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: an owned, non-NULL reference.
        Ok(unsafe { Bound::from_owned_ptr(py, r) })
    }
}
