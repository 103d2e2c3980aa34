//! BERT-family encoder (all-MiniLM-L6-v2, BERT) used as a cross-encoder: `[CLS] query [SEP]
//! document [SEP]` in, grade logits out of a pooler + linear head, exactly as
//! `BertForSequenceClassification`, whose tensor names a saved checkpoint uses.

use crate::attention;
use crate::config::EncoderConfig;
use crate::device::Placement;
use crate::error::{Result, SlmError};
use crate::layers::{LayerNorm, Linear};
use crate::onednn::Fused;
use crate::weights;
use std::path::Path;
use tch::{nn, Kind, Tensor};

const INIT_STD: f64 = 0.02;

struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// Which tokens the top layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopRows {
    /// Every token.
    All,
    /// The first (`[CLS]`) token only: the same values as `All`'s first row, computed for less.
    /// Nothing above the top layer of a cross-encoder reads the other tokens, so the top layer
    /// projects keys and values for every token but runs its query, attention output,
    /// feed-forward and norms for one row. That saves 14% of MiniLM-L6's FLOPs on 258-token
    /// pairs, and 28% of a 3-layer student's.
    First,
}

pub struct CrossEncoder {
    pub config: EncoderConfig,
    pub vs: nn::VarStore,
    pub placement: Placement,
    pub num_labels: usize,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    pooler: Linear,
    classifier: Linear,
    pub max_len: usize,
    /// What the load found missing and initialised (the head, on a bare sentence encoder).
    pub initialized: Vec<String>,
}

impl CrossEncoder {
    /// Builds the model with fresh weights. `num_labels` sizes the grade head.
    pub fn new(config: EncoderConfig, num_labels: usize, placement: Placement) -> Result<Self> {
        let vs = nn::VarStore::new(placement.device);
        let root = vs.root();
        let bert = &root / "bert";
        let c = &config;
        let h = c.hidden_size;
        let randn = nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let emb = &bert / "embeddings";
        let word =
            (&emb / "word_embeddings").var("weight", &[c.vocab_size as i64, h as i64], randn);
        let position = (&emb / "position_embeddings").var(
            "weight",
            &[c.max_position_embeddings as i64, h as i64],
            randn,
        );
        let token_type = (&emb / "token_type_embeddings").var(
            "weight",
            &[c.type_vocab_size as i64, h as i64],
            randn,
        );
        let emb_norm = LayerNorm::new(&emb / "LayerNorm", h, c.layer_norm_eps);
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let lp = &bert / "encoder" / "layer" / i;
            let att = &lp / "attention";
            layers.push(EncoderLayer {
                query: Linear::new(&att / "self" / "query", h, h, true, INIT_STD),
                key: Linear::new(&att / "self" / "key", h, h, true, INIT_STD),
                value: Linear::new(&att / "self" / "value", h, h, true, INIT_STD),
                attn_out: Linear::new(&att / "output" / "dense", h, h, true, INIT_STD),
                attn_norm: LayerNorm::new(&att / "output" / "LayerNorm", h, c.layer_norm_eps),
                intermediate: Linear::new(
                    &lp / "intermediate" / "dense",
                    h,
                    c.intermediate_size,
                    true,
                    INIT_STD,
                ),
                output: Linear::new(
                    &lp / "output" / "dense",
                    c.intermediate_size,
                    h,
                    true,
                    INIT_STD,
                ),
                out_norm: LayerNorm::new(&lp / "output" / "LayerNorm", h, c.layer_norm_eps),
            });
        }
        let pooler = Linear::new(&bert / "pooler" / "dense", h, h, true, INIT_STD);
        let classifier = Linear::new(&root / "classifier", h, num_labels, true, INIT_STD);
        let max_len = c.max_position_embeddings;
        let mut model = CrossEncoder {
            config,
            vs,
            placement,
            num_labels,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            pooler,
            classifier,
            max_len,
            initialized: vec![],
        };
        if placement.kind != Kind::Float {
            model.vs.set_kind(placement.kind);
        }
        if placement.int8 {
            model.quantize_int8()?;
        }
        Ok(model)
    }

    /// Loads a BERT folder. A sentence encoder (no `bert.` prefix, no head) gets a fresh grade
    /// head of `num_labels` classes; a cross-encoder checkpoint must have `num_labels` classes.
    pub fn load(dir: &Path, num_labels: usize, placement: Placement) -> Result<Self> {
        Self::load_layers(dir, num_labels, placement, None)
    }

    /// Like [`CrossEncoder::load`], keeping only the bottom `keep_layers` transformer layers
    /// (all when `None`). A smaller student for distillation: the top layers are dropped, which
    /// costs the least accuracy among layer-dropping schemes (Sajjad et al., 2023), and a model
    /// of `k` layers runs about `6/k` times faster than MiniLM-L6. The saved config records the
    /// new depth, so the checkpoint loads anywhere as a plain BERT.
    pub fn load_layers(
        dir: &Path,
        num_labels: usize,
        placement: Placement,
        keep_layers: Option<usize>,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let mut config = EncoderConfig::from_file(&config_path)?;
        let full_depth = config.num_layers;
        if let Some(k) = keep_layers {
            if k == 0 || k > full_depth {
                return Err(SlmError::config(
                    &config_path,
                    format!("cannot keep {k} of the model's {full_depth} layers"),
                ));
            }
            config.num_layers = k;
            config.raw["num_hidden_layers"] = serde_json::json!(k);
        }
        let kept = config.num_layers;
        let dropped_layer = |name: &str| {
            let rest = name.strip_prefix("bert.").unwrap_or(name);
            rest.strip_prefix("encoder.layer.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= kept && i < full_depth)
        };
        if let Some(n) = config.num_labels {
            if n != num_labels {
                return Err(SlmError::config(
                    &config_path,
                    format!(
                        "the checkpoint's head has {n} labels, the grade scale has {num_labels}"
                    ),
                ));
            }
        }
        let mut model = Self::new(config, num_labels, placement)?;
        let report = weights::load_into(
            &model.vs,
            dir,
            |name| {
                let bare = name.strip_prefix("bert.").unwrap_or(name);
                vec![name.to_string(), bare.to_string()]
            },
            |name| name.starts_with("classifier.") || name.starts_with("bert.pooler."),
        )?;
        let unexpected: Vec<_> = report
            .unused
            .iter()
            .filter(|n| {
                !n.ends_with("position_ids")
                    && !n.starts_with("cls.")
                    && !n.starts_with("lm_head")
                    && !dropped_layer(n)
            })
            .collect();
        if !unexpected.is_empty() {
            return Err(SlmError::Weights {
                path: dir.to_path_buf(),
                name: unexpected[0].clone(),
                message: format!(
                    "{} tensor(s) in the file are not part of a BERT encoder",
                    unexpected.len()
                ),
            });
        }
        model.initialized = report.initialized;
        if placement.int8 {
            model.quantize_int8()?;
        }
        Ok(model)
    }

    /// Rebuilds the int8 copies of the transformer layers' linear weights from the fp32 ones
    /// (dynamic quantization: the activations are quantized per call). The pooler and the grade
    /// head stay fp32: they run once per pair and hold the grade. Called by `new`/`load` when
    /// the placement asks for int8; call it again after changing the weights.
    pub fn quantize_int8(&mut self) -> Result<()> {
        if self.placement.device != tch::Device::Cpu {
            return Err(SlmError::Argument("dtype int8 runs on the CPU only".into()));
        }
        for l in &mut self.layers {
            for lin in [
                &mut l.query,
                &mut l.key,
                &mut l.value,
                &mut l.attn_out,
                &mut l.intermediate,
                &mut l.output,
            ] {
                lin.quantize_int8()?;
            }
        }
        Ok(())
    }

    /// Hidden states for token ids, segment ids and a padding mask (`[B, T]`, 1 = real token):
    /// `[B, T, hidden]` for every token, or `[B, 1, hidden]` for the first (see [`TopRows`]).
    /// Dropout is active when `train`.
    pub fn encode(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
        rows: TopRows,
    ) -> Result<Tensor> {
        let (x, key_mask) = self.encode_below_top(ids, type_ids, mask, train)?;
        let top = self
            .layers
            .last()
            .expect("an encoder has at least one layer");
        let queries = match rows {
            TopRows::All => x.shallow_clone(),
            TopRows::First => x.narrow(1, 0, 1),
        };
        self.layer_forward(top, &queries, &x, &key_mask, train)
    }

    /// Embeddings and every layer but the top one: hidden states `[B, T, hidden]` and the
    /// key mask `[B, T]` (bool) the layers use.
    fn encode_below_top(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (_, t) = ids.size2()?;
        if train && self.placement.int8 {
            return Err(SlmError::Argument(
                "an int8 model cannot be trained: load it in fp32".into(),
            ));
        }
        if t as usize > self.max_len {
            return Err(SlmError::Argument(format!(
                "sequence of {t} tokens exceeds max_len {}",
                self.max_len
            )));
        }
        let c = &self.config;
        let positions = Tensor::arange(t, (Kind::Int64, ids.device()));
        let x = Tensor::embedding(&self.word, ids, -1, false, false)
            + Tensor::embedding(&self.position, &positions, -1, false, false).unsqueeze(0)
            + Tensor::embedding(&self.token_type, type_ids, -1, false, false);
        let mut x = self.emb_norm.forward(&x).dropout(c.hidden_dropout, train);
        let key_mask = mask.to_kind(Kind::Bool);
        let below_top = self.layers.len().saturating_sub(1);
        for l in &self.layers[..below_top] {
            x = self.layer_forward(l, &x, &x, &key_mask, train)?;
        }
        Ok((x, key_mask))
    }

    /// One transformer layer: the new hidden states `[B, R, hidden]` of the rows `rows` (`[B, R,
    /// hidden]`), which attend over all tokens `all` (`[B, T, hidden]`). `rows` is `all` for a
    /// full layer, or a slice of it when only those rows are read above.
    fn layer_forward(
        &self,
        l: &EncoderLayer,
        rows: &Tensor,
        all: &Tensor,
        key_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let p = c.hidden_dropout;
        let drop = if train { p } else { 0.0 };
        let q = l.query.forward(rows);
        let k = l.key.forward(all);
        let v = l.value.forward(all);
        let a = if attention::applies(&q, c.hidden_size / c.num_heads, drop) {
            attention::forward(&q, &k, &v, key_mask, c.num_heads)?
        } else {
            self.sdpa(&q, &k, &v, key_mask, drop)?
        };
        let x = l
            .attn_norm
            .forward(&(l.attn_out.forward(&a).dropout(p, train) + rows));
        let gelu_tanh = c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh";
        let act = if gelu_tanh {
            Fused::GeluTanh
        } else {
            Fused::Gelu
        };
        let i = l.intermediate.forward_fused(&x, act);
        Ok(l.out_norm
            .forward(&(l.output.forward(&i).dropout(p, train) + &x)))
    }

    /// libtorch's attention over `[B, R, hidden]` queries and `[B, T, hidden]` keys and values,
    /// split into heads and merged back: `[B, R, hidden]`.
    fn sdpa(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_mask: &Tensor,
        dropout: f64,
    ) -> Result<Tensor> {
        let c = &self.config;
        let nh = c.num_heads as i64;
        let hd = (c.hidden_size / c.num_heads) as i64;
        let (b, r, _) = q.size3()?;
        let t = k.size()[1];
        let split = |y: &Tensor, len: i64| y.view([b, len, nh, hd]).transpose(1, 2);
        let mask = key_mask.view([b, 1, 1, t]);
        let a = Tensor::f_scaled_dot_product_attention(
            &split(q, r),
            &split(k, t),
            &split(v, t),
            Some(&mask),
            dropout,
            false,
            None,
            false,
        )?;
        Ok(a.transpose(1, 2).reshape([b, r, nh * hd]))
    }

    /// `BertPooler`: tanh(dense(h)) of the first token's hidden state `[B, hidden]`.
    pub fn pool(&self, cls: &Tensor) -> Tensor {
        self.pooler.forward(cls).tanh()
    }

    /// Grade logits `[B, num_labels]`.
    pub fn grade_logits(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let cls = self
            .encode(ids, type_ids, mask, train, TopRows::First)?
            .squeeze_dim(1);
        let pooled = self.pool(&cls).dropout(self.config.hidden_dropout, train);
        Ok(self.classifier.forward(&pooled))
    }
}
