//! fp32 linear layers on CPU through oneDNN, with each weight packed once into oneDNN's blocked
//! layout (`csrc/onednn.cpp`; `tch` does not wrap these libtorch ops).
//!
//! libtorch's default fp32 `linear` goes to MKL, which on AMD processors takes its AVX2 path
//! even where AVX-512 is there: on the 2-core AMD EPYC (Zen 4) developer VM a MiniLM-sized
//! `linear` ran at 178-222 GFLOP/s through MKL and 286-490 through oneDNN with a packed weight,
//! and a GELU fused into the same call is nearly free. Results agree to 1e-4 (fp32 summation
//! order).
//!
//! A packed copy is only a cache of the weight: it is used when autograd is off (grading) and
//! rebuilt whenever the weight changed since it was packed (its version counter moves with
//! every in-place update: optimizer steps, loading), so training never sees a stale copy.

use crate::error::{Result, SlmError};
use crate::shim::{error_buffer, owned_tensor};
use std::ffi::{c_char, CStr};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn lf_onednn_available() -> i32;
    fn lf_grad_enabled() -> i32;
    fn lf_onednn_pack(weight: *const C_tensor, err: *mut c_char, err_len: usize) -> *mut C_tensor;
    fn lf_onednn_linear(
        input: *const C_tensor,
        packed: *const C_tensor,
        bias: *const C_tensor,
        act: *const c_char,
        algorithm: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut C_tensor;
}

/// The activation fused into a packed linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    None,
    /// GELU, exact (erf).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
}

impl Fused {
    /// oneDNN's post-op name and its algorithm, as `_linear_pointwise` takes them.
    fn onednn_attr(self) -> (&'static CStr, &'static CStr) {
        match self {
            Fused::None => (c"none", c"none"),
            Fused::Gelu => (c"gelu", c"none"),
            Fused::GeluTanh => (c"gelu", c"tanh"),
        }
    }
}

/// Whether this libtorch has oneDNN's linear ops (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: a plain query of the op registry.
    *AVAILABLE.get_or_init(|| unsafe { lf_onednn_available() } == 1)
}

/// Whether autograd records operations on this thread.
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { lf_grad_enabled() == 1 }
}

/// Whether `linear(x, weight)` may take the packed path: fp32 on the CPU with autograd off.
pub fn applies(x: &Tensor, weight: &Tensor) -> bool {
    x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && weight.kind() == Kind::Float
        && !grad_enabled()
        && available()
}

/// A weight in oneDNN's layout, with what identifies the weight it was packed from.
#[derive(Debug)]
pub struct PackedLinear {
    packed: Tensor,
    source_ptr: usize,
    source_version: i64,
}

impl PackedLinear {
    pub fn pack(weight: &Tensor) -> Result<Self> {
        let mut err = error_buffer();
        // SAFETY: `weight` is live for the call; a non-null result is a fresh tensor.
        let p = unsafe { lf_onednn_pack(weight.as_ptr(), err.as_mut_ptr(), err.len()) };
        Ok(PackedLinear {
            packed: owned_tensor(p, &err, "packing a weight for oneDNN")?,
            source_ptr: weight.data_ptr() as usize,
            source_version: weight.internal_version(),
        })
    }

    /// Another handle on the same packed tensor (no copy), for a call outside the layer's lock.
    pub fn share(&self) -> PackedLinear {
        PackedLinear {
            packed: self.packed.shallow_clone(),
            source_ptr: self.source_ptr,
            source_version: self.source_version,
        }
    }

    /// Whether this copy still holds `weight`'s current values.
    pub fn matches(&self, weight: &Tensor) -> bool {
        self.source_ptr == weight.data_ptr() as usize
            && self.source_version == weight.internal_version()
    }

    /// `act(x W^T + b)` for fp32 `x` of any leading shape.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>, act: Fused) -> Result<Tensor> {
        let size = x.size();
        let (last, lead) = size.split_last().ok_or_else(|| {
            SlmError::Argument("a linear layer's input needs at least one dimension".into())
        })?;
        let rows = x.reshape([-1, *last]).contiguous();
        let (act, algorithm) = act.onednn_attr();
        let mut err = error_buffer();
        // SAFETY: every tensor is live for the call; a null bias means none; a non-null result
        // is a fresh tensor.
        let y = unsafe {
            lf_onednn_linear(
                rows.as_ptr(),
                self.packed.as_ptr(),
                bias.map_or(std::ptr::null(), |b| b.as_ptr()),
                act.as_ptr(),
                algorithm.as_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        let y = owned_tensor(y, &err, "oneDNN linear")?;
        let out = y.size()[1];
        let mut shape = lead.to_vec();
        shape.push(out);
        Ok(y.view(shape.as_slice()))
    }
}
