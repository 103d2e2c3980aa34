//! Model configurations read from a Hugging Face `config.json`.

use crate::encoder::TopRows;
use crate::error::{Result, SlmError};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| SlmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| SlmError::config(path, format!("not valid JSON: {e}")))
}

/// Rotary-embedding scaling variants found in llama-family configs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Llama 3.x frequency-band scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: usize,
    },
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Phi-3 "longrope"/"su": per-dimension factors, short below the original context, long above.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position: usize,
    },
}

/// The architectures the decoder implements. All share the llama block (RMSNorm, RoPE, GQA,
/// SwiGLU); they differ in biases and in whether projections are stored fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DecoderFamily {
    Llama,
    Qwen2,
    Mistral,
    Phi3,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecoderConfig {
    pub family: DecoderFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    /// The raw JSON, kept so a checkpoint we write carries every original key.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawDecoder {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    original_max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    partial_rotary_factor: Option<f64>,
}

fn token_ids(v: &Option<serde_json::Value>) -> Vec<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => vec![],
    }
}

impl DecoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = read_json(path)?;
        Self::from_value(raw, path)
    }

    pub fn from_value(raw: serde_json::Value, path: &Path) -> Result<Self> {
        let err = |m: String| SlmError::config(path, m);
        let r: RawDecoder = serde_json::from_value(raw.clone())
            .map_err(|e| err(format!("not a decoder config: {e}")))?;
        let model_type = r.model_type.clone().unwrap_or_default();
        let family = match model_type.as_str() {
            "llama" => DecoderFamily::Llama,
            "qwen2" => DecoderFamily::Qwen2,
            "mistral" => DecoderFamily::Mistral,
            "phi3" => DecoderFamily::Phi3,
            other => {
                return Err(err(format!(
                    "model_type `{other}` is not supported by the decoder (llama, qwen2, mistral, phi3)"
                )))
            }
        };
        if r.partial_rotary_factor.is_some_and(|f| f != 1.0) {
            return Err(err("partial_rotary_factor != 1 is not supported".into()));
        }
        let num_kv_heads = r.num_key_value_heads.unwrap_or(r.num_attention_heads);
        if r.num_attention_heads == 0
            || num_kv_heads == 0
            || !r.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(err(format!(
                "num_attention_heads {} must be a positive multiple of num_key_value_heads {}",
                r.num_attention_heads, num_kv_heads
            )));
        }
        let head_dim = r.head_dim.unwrap_or(r.hidden_size / r.num_attention_heads);
        if !head_dim.is_multiple_of(2) || head_dim == 0 {
            return Err(err(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        let max_pos = r.max_position_embeddings.unwrap_or(2048);
        let rope_scaling = match &r.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                parse_rope_scaling(
                    v,
                    r.original_max_position_embeddings.unwrap_or(max_pos),
                    head_dim,
                )
                .map_err(err)?,
            ),
        }
        .flatten();
        let attention_bias = r.attention_bias.unwrap_or(false);
        Ok(DecoderConfig {
            family,
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            intermediate_size: r.intermediate_size,
            num_layers: r.num_hidden_layers,
            num_heads: r.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: r.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: r.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: max_pos,
            tie_word_embeddings: r.tie_word_embeddings.unwrap_or(false),
            qkv_bias: family == DecoderFamily::Qwen2 || attention_bias,
            o_bias: attention_bias,
            mlp_bias: r.mlp_bias.unwrap_or(false),
            bos_token_id: token_ids(&r.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&r.eos_token_id),
            raw,
        })
    }

    /// Parameters outside the embedding table (and untied head), the ones every token pays for.
    pub fn non_embedding_params(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * self.intermediate_size;
        self.num_layers * (attn + mlp + 2 * h) + h
    }

    /// Forward FLOPs for one sequence of `len` tokens (matmuls + attention), without the LM head.
    pub fn forward_flops(&self, len: usize) -> f64 {
        let dense = 2.0 * (self.non_embedding_params() as f64) * len as f64;
        // causal attention: QK^T and AV, each 2*len*len/2*head_dim per head (half the square).
        let attn = 2.0 * 2.0 * (len * len) as f64 / 2.0 * (self.num_heads * self.head_dim) as f64;
        dense + attn * self.num_layers as f64
    }
}

fn parse_rope_scaling(
    v: &serde_json::Value,
    original_max: usize,
    head_dim: usize,
) -> std::result::Result<Option<RopeScaling>, String> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let factors = |k: &str| -> std::result::Result<Vec<f64>, String> {
        let list: Vec<f64> = v
            .get(k)
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .ok_or(format!("rope_scaling.{k} missing"))?;
        if list.len() != head_dim / 2 {
            return Err(format!(
                "rope_scaling.{k} has {} entries, expected head_dim/2 = {}",
                list.len(),
                head_dim / 2
            ));
        }
        Ok(list)
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor").ok_or("rope_scaling.factor missing")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor").ok_or("rope_scaling.factor missing")?,
            low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
            original_max_position: v
                .get("original_max_position_embeddings")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(original_max),
        }),
        "longrope" | "su" => Some(RopeScaling::LongRope {
            short_factor: factors("short_factor")?,
            long_factor: factors("long_factor")?,
            original_max_position: original_max,
        }),
        other => {
            return Err(format!(
                "rope_scaling type `{other}` is not supported (linear, llama3, longrope)"
            ))
        }
    })
}

/// BERT-family encoder configuration (MiniLM, BERT, and cross-encoders built on them).
#[derive(Debug, Clone, Serialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_dropout: f64,
    pub hidden_act: String,
    /// Number of grade classes of the head; `None` when the checkpoint has no head yet.
    pub num_labels: Option<usize>,
    pub pad_token_id: i64,
    #[serde(skip)]
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawEncoder {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_dropout_prob: Option<f64>,
    hidden_act: Option<String>,
    num_labels: Option<usize>,
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
    architectures: Option<Vec<String>>,
    pad_token_id: Option<i64>,
    position_embedding_type: Option<String>,
}

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = read_json(path)?;
        let err = |m: String| SlmError::config(path, m);
        let r: RawEncoder = serde_json::from_value(raw.clone())
            .map_err(|e| err(format!("not an encoder config: {e}")))?;
        match r.model_type.as_deref() {
            Some("bert") | None => {}
            Some(other) => return Err(err(format!("model_type `{other}` is not a BERT encoder"))),
        }
        if r.position_embedding_type
            .as_deref()
            .is_some_and(|p| p != "absolute")
        {
            return Err(err("only absolute position embeddings are supported".into()));
        }
        if r.num_attention_heads == 0 || !r.hidden_size.is_multiple_of(r.num_attention_heads) {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                r.hidden_size, r.num_attention_heads
            )));
        }
        if r.num_hidden_layers == 0 {
            return Err(err(
                "num_hidden_layers is 0: an encoder needs at least one layer".into(),
            ));
        }
        let is_classifier = r
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x.ends_with("ForSequenceClassification")));
        let num_labels = if is_classifier {
            Some(
                r.num_labels
                    .or(r.id2label.as_ref().map(|m| m.len()))
                    .unwrap_or(2),
            )
        } else {
            None
        };
        Ok(EncoderConfig {
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            num_layers: r.num_hidden_layers,
            num_heads: r.num_attention_heads,
            intermediate_size: r.intermediate_size,
            max_position_embeddings: r.max_position_embeddings.unwrap_or(512),
            type_vocab_size: r.type_vocab_size.unwrap_or(2),
            layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-12),
            hidden_dropout: r.hidden_dropout_prob.unwrap_or(0.1),
            hidden_act: r.hidden_act.unwrap_or_else(|| "gelu".into()),
            num_labels,
            pad_token_id: r.pad_token_id.unwrap_or(0),
            raw,
        })
    }

    pub fn non_embedding_params(&self) -> usize {
        let h = self.hidden_size;
        self.num_layers * (4 * h * h + 2 * h * self.intermediate_size)
    }

    /// Forward FLOPs for one sequence of `len` tokens: every layer but the top on all tokens;
    /// the top layer's keys and values on all tokens, the rest of it on the rows `top` asks for
    /// (all, or the first: what `CrossEncoder::encode` runs).
    pub fn forward_flops(&self, len: usize, top: TopRows) -> f64 {
        let h = self.hidden_size as f64;
        let layer = |rows: f64, keys: f64| {
            let kv = 2.0 * 2.0 * h * h * keys;
            let rest = 2.0 * (2.0 * h * h + 2.0 * h * self.intermediate_size as f64) * rows;
            let attn = 2.0 * 2.0 * rows * keys * h;
            kv + rest + attn
        };
        let n = len as f64;
        let top_rows = match top {
            TopRows::All => n,
            TopRows::First => 1.0,
        };
        layer(n, n) * self.num_layers.saturating_sub(1) as f64 + layer(top_rows, n)
    }
}
