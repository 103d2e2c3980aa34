//! What the Rust side of the C++ shims (`csrc/*.cpp`, libtorch ops `tch` does not wrap) shares:
//! every shim function reports a C++ exception as a NUL-terminated message in a caller-owned
//! buffer and returns null (or non-zero) instead of a result.

use crate::error::{Result, SlmError};
use std::ffi::{c_char, CStr};
use tch::Tensor;
use torch_sys::C_tensor;

/// A zeroed buffer for a shim's error message.
pub(crate) fn error_buffer() -> Vec<c_char> {
    vec![0; 512]
}

/// The message a shim wrote into `buf`.
pub(crate) fn message(buf: &[c_char]) -> String {
    // SAFETY: the C++ side always NUL-terminates within the buffer (it was zeroed, too).
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Takes ownership of a tensor a shim function returned, or turns its null result into an error
/// that names `what` and carries the shim's message from `err`.
pub(crate) fn owned_tensor(ptr: *mut C_tensor, err: &[c_char], what: &str) -> Result<Tensor> {
    if ptr.is_null() {
        return Err(SlmError::Argument(format!(
            "{what} failed: {}",
            message(err)
        )));
    }
    // SAFETY: a non-null result of the shim is a fresh `at::Tensor*` owned from here on.
    Ok(unsafe { Tensor::from_ptr(ptr) })
}
