//! Run-time choice of device and precision: fp32 on CPU, bf16 on CUDA, and int8 linear layers
//! on CPU on request.

use crate::error::{Result, SlmError};
use tch::{Device, Kind};

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
