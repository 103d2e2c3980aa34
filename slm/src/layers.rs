//! Building blocks shared by the models: a linear layer with Hugging Face parameter names.

use crate::error::Result;
use crate::int8::Int8Linear;
use crate::onednn::{self, Fused, PackedLinear};
use std::sync::Mutex;
use tch::{nn, Tensor};

/// `y = x W^T + b`, stored as `{prefix}.weight` / `{prefix}.bias` like `torch.nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// An int8 copy of the weights (CPU, `--dtype int8`); `forward` uses it when present.
    pub int8: Option<Box<Int8Linear>>,
    /// The weight packed for oneDNN, made on the first fp32 CPU call without autograd and
    /// remade when the weight changes (see `onednn`).
    packed: Mutex<Packing>,
}

/// The state of a layer's oneDNN copy.
#[derive(Debug)]
enum Packing {
    None,
    Packed(Box<PackedLinear>),
    /// Packing or a packed call failed once (warned): libtorch's linear from then on.
    Failed,
}

impl Linear {
    pub fn new(p: nn::Path, in_dim: usize, out_dim: usize, bias: bool, std: f64) -> Self {
        let weight = p.var(
            "weight",
            &[out_dim as i64, in_dim as i64],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        let bias = bias.then(|| p.var("bias", &[out_dim as i64], nn::Init::Const(0.0)));
        Linear {
            weight,
            bias,
            int8: None,
            packed: Mutex::new(Packing::None),
        }
    }

    /// (Re)builds the int8 copy from the current fp32 weights.
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.int8 = Some(Box::new(Int8Linear::quantize(
            &self.weight,
            self.bias.as_ref(),
        )?));
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_fused(x, Fused::None)
    }

    /// `act(x W^T + b)`: fused into one oneDNN call on the packed path, else applied after.
    pub fn forward_fused(&self, x: &Tensor, act: Fused) -> Tensor {
        if let Some(q) = &self.int8 {
            return apply(q.forward(x), act);
        }
        if let Some(packed) = self.packed_for(x) {
            match packed.forward(x, self.bias.as_ref(), act) {
                Ok(y) => return y,
                Err(e) => self.give_up_packing(e),
            }
        }
        apply(x.linear(&self.weight, self.bias.as_ref()), act)
    }

    /// The packed weight for an fp32 CPU call without autograd, packing (again) when the weight
    /// changed since; `None` when the packed path does not apply or has failed.
    fn packed_for(&self, x: &Tensor) -> Option<PackedLinear> {
        if !onednn::applies(x, &self.weight) {
            return None;
        }
        let mut slot = self.packed.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Packing::Failed => return None,
            Packing::Packed(p) if p.matches(&self.weight) => return Some(p.share()),
            _ => {}
        }
        match PackedLinear::pack(&self.weight) {
            Ok(p) => {
                let shared = p.share();
                *slot = Packing::Packed(Box::new(p));
                Some(shared)
            }
            Err(e) => {
                drop(slot);
                self.give_up_packing(e);
                None
            }
        }
    }

    fn give_up_packing(&self, e: crate::error::SlmError) {
        tracing::warn!("{e}; this layer uses libtorch's linear from now on");
        *self.packed.lock().unwrap_or_else(|p| p.into_inner()) = Packing::Failed;
    }
}

fn apply(y: Tensor, act: Fused) -> Tensor {
    match act {
        Fused::None => y,
        Fused::Gelu => y.gelu("none"),
        Fused::GeluTanh => y.gelu("tanh"),
    }
}

/// Layer normalisation with `weight`/`bias`, as BERT's `LayerNorm`.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, dim: usize, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim as i64], nn::Init::Const(1.0)),
            bias: p.var("bias", &[dim as i64], nn::Init::Const(0.0)),
            eps,
            dim: dim as i64,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}
