//! Bidirectional attention for the encoder on CPU, fp32, through an AVX-512 kernel for short
//! sequences (`csrc/attention.cpp`).
//!
//! libtorch's CPU attention runs its block products through MKL's sgemm, which takes its AVX2
//! path on AMD processors: on MiniLM's shapes (12 heads of 32, about 260 tokens) it ran at about
//! 110 GFLOP/s on a 2-core machine whose GEMMs reach 460. The kernel does each (sequence, head)
//! whole in cache, reads the heads in place from the projections' outputs and writes the result
//! in the layout the output projection takes, so the head split and merge are not copies.
//!
//! It applies when grading (autograd off, no dropout), on an fp32 CPU tensor, with heads of 16,
//! 32 or 64 on a processor with AVX-512; everything else goes to libtorch's
//! `scaled_dot_product_attention`. The results agree with it to about 1e-6 (summation order).

use crate::error::Result;
use crate::onednn;
use crate::shim::{error_buffer, owned_tensor};
use std::ffi::c_char;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn lf_attention_available() -> i32;
    fn lf_attention_head_dim_supported(head_dim: i64) -> i32;
    fn lf_attention(
        q: *const C_tensor,
        k: *const C_tensor,
        v: *const C_tensor,
        key_mask: *const C_tensor,
        heads: i64,
        scale: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut C_tensor;
}

/// Whether this processor runs the kernel (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: reads the processor's feature flags.
    *AVAILABLE.get_or_init(|| unsafe { lf_attention_available() } == 1)
}

/// Whether attention over `q` (`[B, R, heads * head_dim]`) may take the kernel: fp32 on the CPU,
/// autograd off, no dropout, a supported head size, AVX-512.
pub fn applies(q: &Tensor, head_dim: usize, dropout: f64) -> bool {
    q.device() == Device::Cpu
        && q.kind() == Kind::Float
        && dropout == 0.0
        && !onednn::grad_enabled()
        // SAFETY: a pure function of its argument.
        && unsafe { lf_attention_head_dim_supported(head_dim as i64) } == 1
        && available()
}

/// `softmax(Q K^T / sqrt(head_dim), masked) V` for each head, with the heads side by side in
/// the last dimension: `q` is `[B, R, heads * head_dim]`, `k` and `v` are `[B, T, heads *
/// head_dim]`, `key_mask` is `[B, T]` (true or 1 = attend). Returns `[B, R, heads * head_dim]`.
pub fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let head_dim = q.size().last().copied().unwrap_or(0) / heads.max(1) as i64;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut err = error_buffer();
    // SAFETY: every tensor is live for the call; a non-null result is a fresh tensor.
    let out = unsafe {
        lf_attention(
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            key_mask.as_ptr(),
            heads as i64,
            scale,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    owned_tensor(out, &err, "the CPU attention kernel")
}
