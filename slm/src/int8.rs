//! Dynamic int8 linear layers for CPU: weights quantized once (per tensor, fbgemm's layout),
//! activations quantized per call, int8 × int8 → int32 matmuls, fp32 out. libtorch's fbgemm ops
//! do the work (`csrc/int8.cpp`; `tch` does not wrap them).

use crate::error::{Result, SlmError};
use crate::shim::{error_buffer, message, owned_tensor};
use std::ffi::c_char;
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn lf_int8_quantize(
        weight: *const C_tensor,
        q: *mut *mut C_tensor,
        col_offsets: *mut *mut C_tensor,
        packed: *mut *mut C_tensor,
        scale: *mut f64,
        zero_point: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn lf_int8_linear(
        input: *const C_tensor,
        q: *const C_tensor,
        packed: *const C_tensor,
        col_offsets: *const C_tensor,
        scale: f64,
        zero_point: i64,
        bias: *const C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut C_tensor;
}

/// A linear layer's weight in fbgemm's int8 form, with its fp32 bias.
#[derive(Debug)]
pub struct Int8Linear {
    q: Tensor,
    col_offsets: Tensor,
    packed: Tensor,
    scale: f64,
    zero_point: i64,
    bias: Tensor,
}

impl Int8Linear {
    /// Quantizes `weight` (`[out, in]`, CPU). A missing bias becomes zeros.
    pub fn quantize(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        if weight.device() != tch::Device::Cpu {
            return Err(SlmError::Argument("int8 weights must be on the CPU".into()));
        }
        let mut err = error_buffer();
        let (mut q, mut co, mut packed) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        let (mut scale, mut zp) = (0f64, 0i64);
        // SAFETY: `weight` is a live tensor; on success the three out-pointers are fresh
        // `at::Tensor`s whose ownership passes to `Tensor::from_ptr`.
        let rc = unsafe {
            lf_int8_quantize(
                weight.as_ptr(),
                &mut q,
                &mut co,
                &mut packed,
                &mut scale,
                &mut zp,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(SlmError::Argument(format!(
                "int8 quantization failed: {}",
                message(&err)
            )));
        }
        let out = weight.size()[0];
        let bias = match bias {
            Some(b) => b.detach().to_kind(Kind::Float).contiguous(),
            None => Tensor::zeros([out], (Kind::Float, tch::Device::Cpu)),
        };
        // SAFETY: see above.
        unsafe {
            Ok(Int8Linear {
                q: Tensor::from_ptr(q),
                col_offsets: Tensor::from_ptr(co),
                packed: Tensor::from_ptr(packed),
                scale,
                zero_point: zp,
                bias,
            })
        }
    }

    /// `x W^T + b` for fp32 `x` of any leading shape.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut err = error_buffer();
        // SAFETY: all tensors are live for the call; a non-null result is a fresh tensor.
        let y = unsafe {
            lf_int8_linear(
                x.as_ptr(),
                self.q.as_ptr(),
                self.packed.as_ptr(),
                self.col_offsets.as_ptr(),
                self.scale,
                self.zero_point,
                self.bias.as_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        owned_tensor(y, &err, "int8 linear")
    }
}
