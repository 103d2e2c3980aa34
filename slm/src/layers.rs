//! Building blocks shared by the models: a linear layer with Hugging Face parameter names.

use crate::error::Result;
use crate::int8::Int8Linear;
use tch::{nn, Tensor};

/// `y = x W^T + b`, stored as `{prefix}.weight` / `{prefix}.bias` like `torch.nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// An int8 copy of the weights (CPU, `--dtype int8`); `forward` uses it when present.
    pub int8: Option<Int8Linear>,
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
        }
    }

    /// (Re)builds the int8 copy from the current fp32 weights.
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.int8 = Some(Int8Linear::quantize(&self.weight, self.bias.as_ref())?);
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.int8 {
            Some(q) => q.forward(x),
            None => x.linear(&self.weight, self.bias.as_ref()),
        }
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
