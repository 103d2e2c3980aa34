//! Llama-family decoder LM (SmolLM2, Llama, Qwen2, Mistral, Phi-3): RMSNorm, rotary position
//! embeddings, grouped-query attention and a SwiGLU MLP, with tied or untied LM head.
//!
//! Parameters live in a `VarStore` under their Hugging Face names (`model.layers.0.self_attn.q_proj.weight`),
//! so loading and saving are name-for-name and a checkpoint we write loads in Python `transformers`.

use crate::config::{DecoderConfig, DecoderFamily, RopeScaling};
use crate::device::Placement;
use crate::error::{Result, SlmError};
use crate::layers::Linear;
use crate::weights;
use std::path::Path;
use tch::{nn, Kind, Tensor};

const INIT_STD: f64 = 0.02;

enum Qkv {
    Split {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// Phi-3 stores `qkv_proj` fused.
    Fused(Linear),
}

enum GateUp {
    Split {
        gate: Linear,
        up: Linear,
    },
    /// Phi-3 stores `gate_up_proj` fused (gate first).
    Fused(Linear),
}

struct Block {
    input_norm: Tensor,
    qkv: Qkv,
    o_proj: Linear,
    post_norm: Tensor,
    gate_up: GateUp,
    down_proj: Linear,
}

/// How tokens may attend in one forward pass.
pub enum Attention<'a> {
    /// Plain causal attention over positions `0..T`: no padding on the left, no cache.
    /// Right padding is harmless: real tokens never see later positions.
    Causal,
    /// Explicit positions `[B, T]` and a boolean mask `[B, 1, T, S]` (true = may attend),
    /// where `S` counts cached plus new keys. Used by batched generation with left padding.
    Masked {
        positions: &'a Tensor,
        mask: &'a Tensor,
    },
    /// Every row continues one shared prefix whose keys/values are in the cache (computed once
    /// from a batch of one): positions start after it, each token sees the whole prefix and,
    /// causally, its own row. Right padding is harmless as with `Causal`.
    Prefixed { prefix: &'a KvCache },
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
        }
    }
    pub fn len(&self) -> i64 {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.size()[2])
            .unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keeps only the given batch rows (to drop finished sequences).
    pub fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
    }
}

pub struct DecoderLm {
    pub config: DecoderConfig,
    pub vs: nn::VarStore,
    pub placement: Placement,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Option<Tensor>,
    /// cos/sin tables `[max_len, head_dim]` in the model's dtype.
    rope_cos: Tensor,
    rope_sin: Tensor,
    pub max_len: usize,
}

impl DecoderLm {
    /// Builds the model with freshly initialised weights (for throughput runs of configs whose
    /// weights we do not have, and as the skeleton `load` fills).
    pub fn new(config: DecoderConfig, placement: Placement, max_len: usize) -> Result<Self> {
        if placement.int8 {
            return Err(SlmError::Argument(
                "dtype int8 is implemented for cross-encoders (the student) only; run decoders \
                 in fp32 on the CPU"
                    .into(),
            ));
        }
        let vs = nn::VarStore::new(placement.device);
        let root = vs.root();
        let c = &config;
        let h = c.hidden_size;
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        let model = &root / "model";
        let embed = (&model / "embed_tokens").var(
            "weight",
            &[c.vocab_size as i64, h as i64],
            nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
        );
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let lp = &model / "layers" / i;
            let attn = &lp / "self_attn";
            let mlp = &lp / "mlp";
            let qkv = if c.family == DecoderFamily::Phi3 {
                Qkv::Fused(Linear::new(
                    &attn / "qkv_proj",
                    h,
                    q_dim + 2 * kv_dim,
                    c.qkv_bias,
                    INIT_STD,
                ))
            } else {
                Qkv::Split {
                    q: Linear::new(&attn / "q_proj", h, q_dim, c.qkv_bias, INIT_STD),
                    k: Linear::new(&attn / "k_proj", h, kv_dim, c.qkv_bias, INIT_STD),
                    v: Linear::new(&attn / "v_proj", h, kv_dim, c.qkv_bias, INIT_STD),
                }
            };
            let gate_up = if c.family == DecoderFamily::Phi3 {
                GateUp::Fused(Linear::new(
                    &mlp / "gate_up_proj",
                    h,
                    2 * c.intermediate_size,
                    c.mlp_bias,
                    INIT_STD,
                ))
            } else {
                GateUp::Split {
                    gate: Linear::new(
                        &mlp / "gate_proj",
                        h,
                        c.intermediate_size,
                        c.mlp_bias,
                        INIT_STD,
                    ),
                    up: Linear::new(
                        &mlp / "up_proj",
                        h,
                        c.intermediate_size,
                        c.mlp_bias,
                        INIT_STD,
                    ),
                }
            };
            blocks.push(Block {
                input_norm: (&lp / "input_layernorm").var(
                    "weight",
                    &[h as i64],
                    nn::Init::Const(1.0),
                ),
                qkv,
                o_proj: Linear::new(&attn / "o_proj", q_dim, h, c.o_bias, INIT_STD),
                post_norm: (&lp / "post_attention_layernorm").var(
                    "weight",
                    &[h as i64],
                    nn::Init::Const(1.0),
                ),
                gate_up,
                down_proj: Linear::new(
                    &mlp / "down_proj",
                    c.intermediate_size,
                    h,
                    c.mlp_bias,
                    INIT_STD,
                ),
            });
        }
        let final_norm = (&model / "norm").var("weight", &[h as i64], nn::Init::Const(1.0));
        let lm_head = (!c.tie_word_embeddings).then(|| {
            (&root / "lm_head").var(
                "weight",
                &[c.vocab_size as i64, h as i64],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )
        });
        let max_len = max_len.min(c.max_position_embeddings.max(1));
        let (rope_cos, rope_sin) = rope_tables(c, max_len, placement);
        let mut model = DecoderLm {
            config,
            vs,
            placement,
            embed,
            blocks,
            final_norm,
            lm_head,
            rope_cos,
            rope_sin,
            max_len,
        };
        if placement.kind != Kind::Float {
            model.vs.set_kind(placement.kind);
        }
        Ok(model)
    }

    /// Loads `config.json` and the safetensors weights of a Hugging Face model folder.
    pub fn load(dir: &Path, placement: Placement, max_len: usize) -> Result<Self> {
        let config = DecoderConfig::from_file(&dir.join("config.json"))?;
        let model = Self::new(config, placement, max_len)?;
        let report = weights::load_into(&model.vs, dir, |n| vec![n.to_string()], |_| false)?;
        let unexpected: Vec<_> = report
            .unused
            .iter()
            .filter(|n| !n.ends_with("rotary_emb.inv_freq") && *n != "lm_head.weight")
            .collect();
        if !unexpected.is_empty() {
            return Err(SlmError::Weights {
                path: dir.to_path_buf(),
                name: unexpected[0].clone(),
                message: format!(
                    "{} tensor(s) in the file are not part of a {:?} model with this config (wrong config.json?)",
                    unexpected.len(),
                    model.config.family
                ),
            });
        }
        Ok(model)
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The LM head matrix `[vocab, hidden]` (the embedding table when tied).
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Runs the transformer over `input_ids` `[B, T]` and returns the final-normed hidden
    /// states `[B, T, hidden]`. With a cache, new keys/values are appended to it.
    // `x = x + f(x)` stays out of place: `x += ..` on a tch Tensor is an in-place add, which would
    // overwrite a tensor autograd saved for the backward pass of training.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention: &Attention,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.size2()?;
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads as i64, c.num_kv_heads as i64, c.head_dim as i64);
        let (cos, sin, mask, causal) = match attention {
            Attention::Causal => {
                if t as usize > self.max_len {
                    return Err(SlmError::Argument(format!(
                        "sequence of {t} tokens exceeds the engine's max_len {}",
                        self.max_len
                    )));
                }
                let cos = self.rope_cos.narrow(0, 0, t).view([1, 1, t, hd]);
                let sin = self.rope_sin.narrow(0, 0, t).view([1, 1, t, hd]);
                (cos, sin, None, true)
            }
            Attention::Masked { positions, mask } => {
                let max_pos = positions.max().int64_value(&[]);
                if max_pos as usize >= self.max_len {
                    return Err(SlmError::Argument(format!(
                        "position {max_pos} exceeds the engine's max_len {}",
                        self.max_len
                    )));
                }
                let cos = self
                    .rope_cos
                    .index_select(0, &positions.flatten(0, 1))
                    .view([b, 1, t, hd]);
                let sin = self
                    .rope_sin
                    .index_select(0, &positions.flatten(0, 1))
                    .view([b, 1, t, hd]);
                (cos, sin, Some(mask.shallow_clone()), false)
            }
            Attention::Prefixed { prefix } => {
                let p = prefix.len();
                if (p + t) as usize > self.max_len {
                    return Err(SlmError::Argument(format!(
                        "prefix of {p} plus {t} tokens exceeds the engine's max_len {}",
                        self.max_len
                    )));
                }
                let cos = self.rope_cos.narrow(0, p, t).view([1, 1, t, hd]);
                let sin = self.rope_sin.narrow(0, p, t).view([1, 1, t, hd]);
                let dev = input_ids.device();
                let mask = Tensor::cat(
                    &[
                        Tensor::ones([t, p], (Kind::Bool, dev)),
                        Tensor::ones([t, t], (Kind::Bool, dev)).tril(0),
                    ],
                    1,
                );
                (cos, sin, Some(mask), false)
            }
        };
        let shared_prefix = match attention {
            Attention::Prefixed { prefix } => Some(*prefix),
            _ => None,
        };
        let mut x = Tensor::embedding(&self.embed, input_ids, -1, false, false);
        let eps = c.rms_norm_eps;
        let hidden = c.hidden_size as i64;
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = x.rms_norm([hidden], Some(&blk.input_norm), eps);
            let (q, k, v) = match &blk.qkv {
                Qkv::Split { q, k, v } => (q.forward(&h), k.forward(&h), v.forward(&h)),
                Qkv::Fused(l) => {
                    let y = l.forward(&h);
                    let parts = y.split_with_sizes([nh * hd, nkv * hd, nkv * hd], -1);
                    (
                        parts[0].shallow_clone(),
                        parts[1].shallow_clone(),
                        parts[2].shallow_clone(),
                    )
                }
            };
            let q = q.view([b, t, nh, hd]).transpose(1, 2);
            let k = k.view([b, t, nkv, hd]).transpose(1, 2);
            let v = v.view([b, t, nkv, hd]).transpose(1, 2);
            let q = apply_rope(&q, &cos, &sin);
            let mut k = apply_rope(&k, &cos, &sin);
            let mut v = v;
            if let Some(Some((pk, pv))) = shared_prefix.map(|p| &p.layers[i]) {
                let (_, _, pl, _) = pk.size4()?;
                k = Tensor::cat(&[pk.expand([b, nkv, pl, hd], false), k], 2);
                v = Tensor::cat(&[pv.expand([b, nkv, pl, hd], false), v], 2);
            }
            if let Some(cache) = cache.as_deref_mut() {
                if cache.layers.len() != self.blocks.len() {
                    cache.layers = (0..self.blocks.len()).map(|_| None).collect();
                }
                if let Some((pk, pv)) = &cache.layers[i] {
                    k = Tensor::cat(&[pk, &k], 2);
                    v = Tensor::cat(&[pv, &v], 2);
                }
                cache.layers[i] = Some((k.shallow_clone(), v.shallow_clone()));
            }
            let a = if t == 1 && nkv != nh {
                // one query row per sequence (a decoding step): each key-value head's query
                // heads become its rows, so the keys and values (the whole cache) are read in
                // place instead of copied once per query head
                let grouped = q.reshape([b, nkv, nh / nkv, hd]);
                Tensor::f_scaled_dot_product_attention(
                    &grouped,
                    &k,
                    &v,
                    mask.as_ref(),
                    0.0,
                    false,
                    None,
                    false,
                )?
                .reshape([b, nh, 1, hd])
            } else {
                let (k, v) = if nkv != nh {
                    (repeat_kv(&k, nh / nkv), repeat_kv(&v, nh / nkv))
                } else {
                    (k, v)
                };
                Tensor::f_scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    mask.as_ref(),
                    0.0,
                    causal,
                    None,
                    false,
                )?
            };
            let a = a.transpose(1, 2).reshape([b, t, nh * hd]);
            x = x + blk.o_proj.forward(&a);
            let h = x.rms_norm([hidden], Some(&blk.post_norm), eps);
            let m = match &blk.gate_up {
                GateUp::Split { gate, up } => gate.forward(&h).silu() * up.forward(&h),
                GateUp::Fused(l) => {
                    let y = l.forward(&h);
                    let parts = y.chunk(2, -1);
                    parts[0].silu() * &parts[1]
                }
            };
            x = x + blk.down_proj.forward(&m);
        }
        Ok(x.rms_norm([hidden], Some(&self.final_norm), eps))
    }

    /// Full-vocabulary logits `[.., vocab]` for hidden states `[.., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.head_weight().tr())
    }

    /// Logits restricted to `token_ids` (e.g. the grade tokens): `[.., len(token_ids)]`.
    /// Reads only those rows of the head, so grading never pays for the full vocabulary.
    pub fn token_logits(&self, hidden: &Tensor, token_ids: &Tensor) -> Tensor {
        hidden.matmul(&self.head_weight().index_select(0, token_ids).tr())
    }
}

fn repeat_kv(x: &Tensor, n_rep: i64) -> Tensor {
    let (b, h, t, d) = x.size4().expect("kv is 4-d");
    x.unsqueeze(2)
        .expand([b, h, n_rep, t, d], false)
        .reshape([b, h * n_rep, t, d])
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// cos/sin tables as Hugging Face computes them (`cat(freqs, freqs)`), including the rope
/// scaling variants of the config, then cast to the model dtype.
fn rope_tables(c: &DecoderConfig, max_len: usize, placement: Placement) -> (Tensor, Tensor) {
    let d = c.head_dim;
    let mut inv_freq: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    let mut attention_factor = 1.0;
    match &c.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => inv_freq.iter_mut().for_each(|f| *f /= factor),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        }) => {
            let old = *original_max_position as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position,
        }) => {
            let factors = if max_len > *original_max_position {
                long_factor
            } else {
                short_factor
            };
            for (f, s) in inv_freq.iter_mut().zip(factors) {
                *f /= s;
            }
            let scale = c.max_position_embeddings as f64 / *original_max_position as f64;
            if scale > 1.0 {
                attention_factor = (1.0 + scale.ln() / (*original_max_position as f64).ln()).sqrt();
            }
        }
    }
    // fp32 like transformers, so the tables match its bit for bit at small positions.
    let inv = Tensor::from_slice(&inv_freq).to_kind(Kind::Float);
    let pos = Tensor::arange(max_len as i64, (Kind::Float, tch::Device::Cpu));
    let freqs = pos.outer(&inv);
    let emb = Tensor::cat(&[&freqs, &freqs], 1);
    let cos = (emb.cos() * attention_factor)
        .to_kind(placement.kind)
        .to_device(placement.device);
    let sin = (emb.sin() * attention_factor)
        .to_kind(placement.kind)
        .to_device(placement.device);
    (cos, sin)
}
