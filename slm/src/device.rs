//! Run-time choice of device and precision: fp32 on CPU, bf16 on CUDA, and int8 linear layers
//! on CPU on request.

use crate::error::{Result, SlmError};
use tch::{Device, Kind};

/// The libtorch setting that puts cuDNN's attention last among the CUDA attention backends.
pub const CUDNN_ATTENTION_LAST: &str = "TORCH_CUDNN_SDPA_DEPRIORITIZED";

/// Process-wide libtorch settings the engine depends on; call once at the start of `main`,
/// before any thread is spawned (it writes environment variables). A variable the user has set
/// is left alone.
///
/// On Hopper with cuDNN >= 9.15.1, libtorch 2.11 puts cuDNN's attention first. cuDNN builds an
/// execution plan for every new (batch, length) shape: on an H200 that cost 45 ms to 1.3 s per
/// new shape against 0.7 ms per call once built, while memory-efficient attention costs the same
/// 0.75 ms on the first call of a shape as on later ones (`bench/explore/gpu_shapes.py`). A grader
/// sees a new shape in nearly every batch (lengths vary, batches are sorted by length), so the
/// engine asks for the old order: flash, memory-efficient, math, then cuDNN.
///
/// On the CPU, glibc's malloc gives every block over its mmap threshold (128 KiB, rising with use
/// to at most 32 MiB) fresh pages from the kernel and hands them back on free, and trims the
/// heap's free top above twice that. libtorch allocates each activation anew, so a grader spent
/// 12% of its time in page faults. The engine fixes the threshold at 32 MiB and trims only above
/// 256 MiB, so activations reuse heap memory (MiniLM grading on 2 cores: fp32 +11%, int8 +38%),
/// unless the user has tuned malloc (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or
/// `GLIBC_TUNABLES`).
pub fn configure_process() {
    if std::env::var_os(CUDNN_ATTENTION_LAST).is_none() {
        std::env::set_var(CUDNN_ATTENTION_LAST, "1");
    }
    let malloc_tuned = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "GLIBC_TUNABLES",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !malloc_tuned {
        keep_activations_on_the_heap();
    }
}

/// The largest mmap threshold glibc accepts (`HEAP_MAX_SIZE / 2` on 64-bit).
const MMAP_THRESHOLD: i32 = 32 << 20;
const TRIM_THRESHOLD: i32 = 256 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_activations_on_the_heap() {
    // SAFETY: mallopt only sets allocator parameters; it returns 0 for a value it refuses.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !ok {
        tracing::debug!("glibc refused the malloc thresholds; its defaults stay");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_activations_on_the_heap() {}

/// Where a model runs and in which precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub device: Device,
    /// The activations' dtype (fp32 when `int8`).
    pub kind: Kind,
    /// Dynamic int8 linear layers (fbgemm, CPU only; `--dtype int8`). Cross-encoders only.
    pub int8: bool,
}

impl Placement {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` takes the first GPU when one is visible.
    /// Precision follows the device (bf16 on CUDA, fp32 on CPU: bf16 matmul on CPUs without AMX
    /// is hundreds of times slower) unless `kind` overrides it. `int8` quantizes the linear layers
    /// of a cross-encoder (fp32 activations in and out); it runs on the CPU only and is refused on
    /// CUDA.
    pub fn parse(spec: &str, kind: Option<&str>) -> Result<Self> {
        let device = match spec {
            "auto" => Device::cuda_if_available(),
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            s if s.starts_with("cuda:") => {
                let n: usize = s[5..]
                    .parse()
                    .map_err(|_| SlmError::Argument(format!("device `{s}`: expected cuda:N")))?;
                Device::Cuda(n)
            }
            other => {
                return Err(SlmError::Argument(format!(
                    "device `{other}`: expected auto, cpu, cuda or cuda:N"
                )))
            }
        };
        if kind == Some("int8") {
            if device.is_cuda() {
                return Err(SlmError::Argument(format!(
                    "dtype int8 runs on the CPU only (fbgemm kernels), not on cuda:{}; use \
                     --device cpu, or bf16 on the GPU",
                    match device {
                        Device::Cuda(n) => n,
                        _ => 0,
                    }
                )));
            }
            return Ok(Placement {
                device,
                kind: Kind::Float,
                int8: true,
            });
        }
        if let Device::Cuda(n) = device {
            let count = tch::Cuda::device_count() as usize;
            if n >= count {
                return Err(SlmError::Argument(format!(
                    "device cuda:{n} requested but {count} CUDA device(s) are visible"
                )));
            }
        }
        let kind = match kind {
            None | Some("auto") => {
                if device.is_cuda() {
                    Kind::BFloat16
                } else {
                    Kind::Float
                }
            }
            Some("fp32") | Some("float32") => Kind::Float,
            Some("bf16") | Some("bfloat16") => Kind::BFloat16,
            Some("fp16") | Some("float16") => Kind::Half,
            Some(other) => {
                return Err(SlmError::Argument(format!(
                    "dtype `{other}`: expected auto, fp32, bf16, fp16 or int8"
                )))
            }
        };
        Ok(Placement {
            device,
            kind,
            int8: false,
        })
    }

    pub fn cpu() -> Self {
        Placement {
            device: Device::Cpu,
            kind: Kind::Float,
            int8: false,
        }
    }

    pub fn describe(&self) -> String {
        let dev = match self.device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}"),
        };
        let kind = match self.kind {
            _ if self.int8 => "int8",
            Kind::Float => "fp32",
            Kind::BFloat16 => "bf16",
            Kind::Half => "fp16",
            _ => "other",
        };
        format!("{dev}/{kind}")
    }
}
