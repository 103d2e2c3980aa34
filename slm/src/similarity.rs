//! Relevance from a sentence encoder's similarity, a judge that needs no training.
//!
//! A sentence encoder (all-MiniLM-L6-v2: BERT, mean pooling, unit length, as
//! sentence-transformers runs it) embeds queries and documents apart. The judge adds two things
//! to the plain cosine, both from the corpus and neither from labels:
//! - **pseudo-relevance feedback** in embedding space (Rocchio, as dense-retrieval PRF does):
//!   the query's vector moves toward the mean of its top-`depth` corpus documents by cosine,
//!   `q' = normalize(q + weight * mean(top docs))`. On Cranfield's odd-numbered queries this
//!   beat the plain cosine at every point of a fixed grid (BENCHMARKS.md);
//! - **calibration against the corpus**: a pair's cosine is read as a z-score among the
//!   cosines of every corpus document to the same query vector, and the z-score becomes a 0-3
//!   distribution through fixed ordinal cutpoints. A document far above what the corpus
//!   offers the query gets the high grades, whatever the encoder's cosine scale.

use crate::device::Placement;
use crate::encoder::{CrossEncoder, TopRows};
use crate::error::{Result, SlmError};
use crate::grading::{
    bert_specials, check_vocab, clip, document_text, pad_right, plan_batches, validate_pair,
    BatchOptions, Grading, Pair,
};
use crate::tokenizer::TextTokenizer;
use labelfleet_types::pair::InputLimits;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// A BERT sentence encoder: `[CLS] text [SEP]`, mean pooling over the real tokens, unit length.
pub struct SentenceEncoder {
    model: CrossEncoder,
    tokenizer: TextTokenizer,
    cls: i64,
    sep: i64,
    /// Longest input in tokens, specials included (the folder's `max_seq_length`).
    max_len: usize,
    name: String,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers BERT folder. Inputs are cut at `max_len` tokens, or at the
    /// folder's `sentence_bert_config.json` `max_seq_length` when that is shorter.
    pub fn load(dir: &Path, placement: Placement, max_len: usize) -> Result<Self> {
        // the head is not used: an embedding is the mean of the last hidden states
        let model = CrossEncoder::load(dir, 1, placement)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        check_vocab(&tokenizer, model.config.vocab_size)?;
        let (cls, sep) = bert_specials(&tokenizer)?;
        let max_len = max_len
            .min(model.max_len)
            .min(sentence_max_len(dir)?.unwrap_or(usize::MAX));
        if max_len < 3 {
            return Err(SlmError::Argument(format!(
                "max_len {max_len}: a sentence encoder needs room for [CLS], a token and [SEP]"
            )));
        }
        Ok(SentenceEncoder {
            model,
            tokenizer,
            cls,
            sep,
            max_len,
            name: dir.display().to_string(),
        })
    }

    /// `[CLS] text [SEP]`, the text cut to fit.
    fn encode_text(&self, text: &str) -> Result<Vec<i64>> {
        let room = self.max_len - 2;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.cls);
        let mut tokens = self.tokenizer.encode(clip(text.trim(), room * 16))?;
        tokens.truncate(room);
        ids.extend(tokens);
        ids.push(self.sep);
        Ok(ids)
    }

    /// Unit-length embeddings `[N, hidden]` (fp32, on the CPU), in input order. `progress(n)`
    /// is called after each batch with the number of texts it held.
    pub fn embed(
        &self,
        texts: &[&str],
        opts: BatchOptions,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor> {
        let encoded = texts
            .iter()
            .map(|t| self.encode_text(t))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let hidden = self.model.config.hidden_size as i64;
        let mut out = Tensor::zeros(
            [texts.len() as i64, hidden],
            (Kind::Float, tch::Device::Cpu),
        );
        tch::no_grad(|| -> Result<()> {
            for batch in plan_batches(&lens, opts.token_budget, opts.max_batch) {
                let rows: Vec<&[i64]> = batch.iter().map(|&i| encoded[i].as_slice()).collect();
                let pooled = self.mean_pooled(&rows)?;
                let index =
                    Tensor::from_slice(&batch.iter().map(|&i| i as i64).collect::<Vec<_>>());
                let _ = out.index_copy_(0, &index, &pooled);
                progress(batch.len());
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Mean of the top layer's hidden states over each row's real tokens, at unit length.
    fn mean_pooled(&self, rows: &[&[i64]]) -> Result<Tensor> {
        let device = self.model.placement.device;
        let (ids, lens) = pad_right(rows, self.model.config.pad_token_id, device);
        let t = ids.size()[1];
        let lens_t = Tensor::from_slice(&lens).to_device(device).unsqueeze(1);
        let mask = Tensor::arange(t, (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&lens_t);
        let type_ids = ids.zeros_like();
        let hidden = self
            .model
            .encode(&ids, &type_ids, &mask, false, TopRows::All)?
            .to_kind(Kind::Float);
        let weights = mask.to_kind(Kind::Float).unsqueeze(-1);
        let summed = (hidden * &weights).sum_dim_intlist(1, false, Kind::Float);
        let mean = summed / weights.sum_dim_intlist(1, false, Kind::Float);
        Ok(unit_rows(&mean).to_device(tch::Device::Cpu))
    }
}

/// The folder's `sentence_bert_config.json` `max_seq_length`, when it has one.
fn sentence_max_len(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| SlmError::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SlmError::config(&path, e.to_string()))?;
    Ok(v.get("max_seq_length")
        .and_then(|n| n.as_u64())
        .map(|n| n as usize))
}

/// Rows scaled to unit length (a zero row stays zero).
fn unit_rows(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
    x / norm
}

/// The corpus as unit-length embeddings: what feedback and calibration read.
pub struct DenseIndex {
    /// `[N, hidden]`, fp32 on the CPU.
    vectors: Tensor,
}

impl DenseIndex {
    /// Embeds the corpus documents' texts (as [`document_text`] writes them for a pair).
    pub fn build(
        encoder: &SentenceEncoder,
        texts: &[&str],
        opts: BatchOptions,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        if texts.is_empty() {
            return Err(SlmError::Argument(
                "the similarity judge's corpus is empty: it needs documents for feedback and \
                 calibration"
                    .into(),
            ));
        }
        Ok(DenseIndex {
            vectors: encoder.embed(texts, opts, progress)?,
        })
    }

    pub fn len(&self) -> usize {
        self.vectors.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cosines of every corpus document to each query row: `[Q, N]`.
    fn cosines(&self, queries: &Tensor) -> Tensor {
        queries.matmul(&self.vectors.tr())
    }

    /// Moves each query row toward the mean of its top `feedback.depth` documents.
    fn expand(&self, queries: &Tensor, feedback: Feedback) -> Tensor {
        let depth = feedback.depth.min(self.len()) as i64;
        if depth == 0 || feedback.weight == 0.0 {
            return queries.shallow_clone();
        }
        let (_, top) = self.cosines(queries).topk(depth, -1, true, true);
        let centroid = self
            .vectors
            .index_select(0, &top.flatten(0, -1))
            .view([queries.size()[0], depth, -1])
            .mean_dim(1, false, Kind::Float);
        unit_rows(&(queries + centroid * feedback.weight))
    }
}

/// Pseudo-relevance feedback: how many top documents, and how far the query moves to them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    pub depth: usize,
    pub weight: f64,
}

impl Default for Feedback {
    /// 5 documents at weight 1: chosen on Cranfield's odd-numbered queries from the grid
    /// {3, 5, 10} x {0.5, 1.0}, every point of which beat the plain cosine (BENCHMARKS.md).
    fn default() -> Self {
        Feedback {
            depth: 5,
            weight: 1.0,
        }
    }
}

/// From a z-score among the corpus to a distribution over grades: an ordinal logistic,
/// `P(grade >= g) = sigmoid((z - cutpoints[g-1]) / scale)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// One per grade above 0, increasing.
    pub cutpoints: Vec<f64>,
    pub scale: f64,
}

impl Default for Calibration {
    /// Fixed before any evaluation, not fitted: grade 1 from about the top 7% of a normal
    /// corpus (z 1.5), grade 2 from the top 0.6% (z 2.5), grade 3 from the top 0.02% (z 3.5).
    fn default() -> Self {
        Calibration {
            cutpoints: vec![1.5, 2.5, 3.5],
            scale: 0.5,
        }
    }
}

impl Calibration {
    pub fn num_grades(&self) -> usize {
        self.cutpoints.len() + 1
    }

    fn check(&self) -> Result<()> {
        let increasing = self.cutpoints.windows(2).all(|w| w[0] < w[1]);
        let positive = self.scale.is_finite() && self.scale > 0.0;
        if self.cutpoints.is_empty() || !increasing || !positive {
            return Err(SlmError::Argument(format!(
                "calibration: cutpoints {:?} must be increasing and non-empty, scale {} positive",
                self.cutpoints, self.scale
            )));
        }
        Ok(())
    }

    /// The grade distribution of a z-score.
    pub fn distribution(&self, z: f64) -> Vec<f32> {
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let at_least: Vec<f64> = std::iter::once(1.0)
            .chain(self.cutpoints.iter().map(|c| sigmoid((z - c) / self.scale)))
            .chain(std::iter::once(0.0))
            .collect();
        at_least
            .windows(2)
            .map(|w| (w[0] - w[1]).max(0.0) as f32)
            .collect()
    }
}

/// What the judge says of one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub grading: Grading,
    /// Cosine of the document to the (expanded) query.
    pub similarity: f32,
    /// That cosine as a z-score among the corpus's cosines to the same query.
    pub z: f32,
}

/// The encoder's similarity with feedback, calibrated against the corpus.
pub struct SimilarityJudge {
    encoder: SentenceEncoder,
    index: DenseIndex,
    feedback: Feedback,
    calibration: Calibration,
    limits: InputLimits,
}

impl SimilarityJudge {
    pub fn new(
        encoder: SentenceEncoder,
        index: DenseIndex,
        feedback: Feedback,
        calibration: Calibration,
    ) -> Result<Self> {
        calibration.check()?;
        Ok(SimilarityJudge {
            encoder,
            index,
            feedback,
            calibration,
            limits: InputLimits::default(),
        })
    }

    /// Model, feedback and calibration, for provenance and logs.
    pub fn describe(&self) -> String {
        format!(
            "similarity:{} feedback={}x{} corpus={} cutpoints={:?}/{}",
            self.encoder.name,
            self.feedback.depth,
            self.feedback.weight,
            self.index.len(),
            self.calibration.cutpoints,
            self.calibration.scale
        )
    }

    pub fn num_grades(&self) -> usize {
        self.calibration.num_grades()
    }

    /// Checks a pair as the graders do; errors name the record and the field.
    pub fn check_pair(&self, pair: &Pair) -> Result<()> {
        validate_pair(pair, &self.limits)
    }

    /// How many texts [`SimilarityJudge::judge`] embeds for these pairs: each distinct query
    /// and document once.
    pub fn texts_to_embed(&self, pairs: &[Pair]) -> usize {
        let queries = distinct(pairs.iter().map(|p| p.query.trim().to_string())).0;
        let docs = distinct(pairs.iter().map(document_text)).0;
        queries.len() + docs.len()
    }

    /// Judges pairs, in input order. Each distinct query and document is embedded once;
    /// `progress(n)` counts embedded texts.
    pub fn judge(
        &self,
        pairs: &[Pair],
        opts: BatchOptions,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Judgement>> {
        for p in pairs {
            self.check_pair(p)?;
        }
        let (queries, query_of) = distinct(pairs.iter().map(|p| p.query.trim().to_string()));
        let (docs, doc_of) = distinct(pairs.iter().map(document_text));
        let texts: Vec<&str> = queries.iter().chain(&docs).map(String::as_str).collect();
        let vectors = self.encoder.embed(&texts, opts, progress)?;
        let q = vectors.narrow(0, 0, queries.len() as i64);
        let d = vectors.narrow(0, queries.len() as i64, docs.len() as i64);
        let (mean, std, q) = tch::no_grad(|| {
            let q = self.index.expand(&q, self.feedback);
            let corpus = self.index.cosines(&q);
            let mean = corpus.mean_dim(1, false, Kind::Float);
            let std = corpus.std_dim(1, false, false).clamp_min(1e-6);
            (mean, std, q)
        });
        let mean = Vec::<f32>::try_from(mean)?;
        let std = Vec::<f32>::try_from(std)?;
        let qi = Tensor::from_slice(&query_of.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let di = Tensor::from_slice(&doc_of.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let cos = (q.index_select(0, &qi) * d.index_select(0, &di)).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        );
        let cos = Vec::<f32>::try_from(cos)?;
        Ok(cos
            .iter()
            .zip(&query_of)
            .map(|(&s, &qn)| {
                let z = (s - mean[qn]) / std[qn];
                Judgement {
                    grading: Grading::from_distribution(self.calibration.distribution(z as f64)),
                    similarity: s,
                    z,
                }
            })
            .collect())
    }
}

/// The distinct values in first-seen order, and each item's position among them.
fn distinct(items: impl Iterator<Item = String>) -> (Vec<String>, Vec<usize>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut values = vec![];
    let positions = items
        .map(|s| {
            *seen.entry(s.clone()).or_insert_with(|| {
                values.push(s);
                values.len() - 1
            })
        })
        .collect();
    (values, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_a_distribution_rising_with_z() {
        let c = Calibration::default();
        let mut last = -1.0;
        for z in [-3.0, 0.0, 1.5, 2.5, 3.5, 6.0] {
            let d = c.distribution(z);
            assert_eq!(d.len(), 4);
            assert!((d.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{d:?}");
            let g = Grading::from_distribution(d.clone());
            assert!(g.expected > last, "expected grade rises with z: {d:?}");
            last = g.expected;
        }
        assert_eq!(Grading::from_distribution(c.distribution(0.0)).grade, 0);
        assert_eq!(Grading::from_distribution(c.distribution(2.0)).grade, 1);
        assert_eq!(Grading::from_distribution(c.distribution(3.0)).grade, 2);
        assert_eq!(Grading::from_distribution(c.distribution(5.0)).grade, 3);
    }

    #[test]
    fn bad_calibrations_are_refused() {
        for c in [
            Calibration {
                cutpoints: vec![],
                scale: 1.0,
            },
            Calibration {
                cutpoints: vec![2.0, 1.0],
                scale: 1.0,
            },
            Calibration {
                cutpoints: vec![1.0],
                scale: 0.0,
            },
        ] {
            assert!(c.check().is_err(), "{c:?}");
        }
    }

    #[test]
    fn distinct_keeps_first_seen_order() {
        let (v, p) = distinct(["b", "a", "b", "c"].into_iter().map(String::from));
        assert_eq!(v, ["b", "a", "c"]);
        assert_eq!(p, [0, 1, 0, 2]);
    }
}
