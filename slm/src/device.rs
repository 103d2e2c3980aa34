//! Run-time choice of device and precision: fp32 on CPU, bf16 on CUDA.

use crate::error::{Result, SlmError};
use tch::{Device, Kind};

/// Where a model runs and in which precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub device: Device,
    pub kind: Kind,
}

impl Placement {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` takes the first GPU when one is visible.
    /// Precision follows the device (bf16 on CUDA, fp32 on CPU: bf16 matmul on CPUs without AMX
    /// is hundreds of times slower) unless `kind` overrides it.
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
                    "dtype `{other}`: expected auto, fp32, bf16 or fp16"
                )))
            }
        };
        Ok(Placement { device, kind })
    }

    pub fn cpu() -> Self {
        Placement {
            device: Device::Cpu,
            kind: Kind::Float,
        }
    }

    pub fn describe(&self) -> String {
        let dev = match self.device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}"),
        };
        let kind = match self.kind {
            Kind::Float => "fp32",
            Kind::BFloat16 => "bf16",
            Kind::Half => "fp16",
            _ => "other",
        };
        format!("{dev}/{kind}")
    }
}
