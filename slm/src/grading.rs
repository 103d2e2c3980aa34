//! Relevance grading: (query, document) pairs in, a distribution over grades out.
//!
//! Two graders share one interface: a decoder LM read out on the grade tokens at the answer
//! position of a chat prompt (as in Kang et al.), and a BERT cross-encoder with a grade head.
//! Both encode a pair into token ids first (truncating the document, never the query), so
//! batching, training and scoring work on the same `EncodedPair`s.

use crate::decoder::{Attention, DecoderLm, KvCache};
use crate::device::Placement;
use crate::encoder::{CrossEncoder, TopRows};
use crate::error::{Result, SlmError};
use crate::tokenizer::TextTokenizer;
use labelfleet_types::prompt::grade_messages_with_body;
use std::path::Path;
use tch::{Kind, Tensor};

// The pair, its grading and the versioned grading prompts are torch-free and shared with the
// API teacher: they live in `labelfleet-types`.
pub use labelfleet_types::grading::{default_grade_labels, Grading};
pub use labelfleet_types::pair::{document_text, InputLimits, Pair};
pub use labelfleet_types::prompt::{
    grade_messages, grade_messages_for, GradePrompt, GRADE_PROMPT_VERSION,
};

/// A pair as token ids. `type_ids` is empty for decoders.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPair {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// Whether the document was cut to fit `max_len`.
    pub truncated: bool,
}

/// What every grader offers to scoring and training.
pub trait Grader: Send {
    /// Short description (model, kind, prompt version) for provenance and logs.
    fn describe(&self) -> String;
    fn num_grades(&self) -> usize;
    fn max_len(&self) -> usize;
    fn placement(&self) -> Placement;
    /// Encodes a pair, truncating the document to fit. Errors name the record and field.
    fn encode_pair(&self, pair: &Pair) -> Result<EncodedPair>;
    /// Grade logits `[B, num_grades]` for a batch (dropout on when `train`).
    fn grade_logits(&self, batch: &[&EncodedPair], train: bool) -> Result<Tensor>;
    fn var_store(&self) -> &tch::nn::VarStore;
    /// Where the expected grade passes into each next grade, when the grader was calibrated
    /// (`train::calibrate_grades`): a pair's grade is then the bin of its expected grade
    /// rather than its most likely grade. None: the most likely grade.
    fn grade_cutpoints(&self) -> Option<&[f32]>;
    /// Sets (or clears) the cutpoints; `save` writes them to `labelfleet.json` and
    /// `load_grader` reads them back. Refused unless ascending, finite and one fewer than the
    /// grades.
    fn set_grade_cutpoints(&mut self, cutpoints: Option<Vec<f32>>) -> Result<()>;
    /// Forward FLOPs to grade one pair of `len` tokens.
    fn flops(&self, len: usize) -> f64;
    /// Writes a checkpoint folder that loads in Python `transformers`, plus `labelfleet.json`
    /// with the grade scale, prompt version and the given provenance.
    fn save(&self, dir: &Path, provenance: serde_json::Value) -> Result<()>;
}

fn check_text(record: &str, field: &str, text: &str, limits: &InputLimits) -> Result<()> {
    if text.len() > limits.max_field_bytes {
        return Err(SlmError::input(
            record,
            field,
            format!(
                "{} bytes, over the limit of {} bytes",
                text.len(),
                limits.max_field_bytes
            ),
        ));
    }
    Ok(())
}

pub(crate) fn validate_pair(pair: &Pair, limits: &InputLimits) -> Result<()> {
    if pair.id.trim().is_empty() {
        return Err(SlmError::input("<no id>", "id", "empty"));
    }
    if pair.query.trim().is_empty() {
        return Err(SlmError::input(&pair.id, "query", "empty"));
    }
    if pair.body.trim().is_empty() && pair.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(SlmError::input(
            &pair.id,
            "body",
            "empty document (no body and no title)",
        ));
    }
    check_text(&pair.id, "query", &pair.query, limits)?;
    check_text(&pair.id, "body", &pair.body, limits)?;
    if let Some(t) = &pair.title {
        check_text(&pair.id, "title", t, limits)?;
    }
    for (k, v) in &pair.metadata {
        check_text(&pair.id, &format!("metadata.{k}"), v, limits)?;
    }
    Ok(())
}

/// Cuts text to at most `max_bytes` on a char boundary: a document is never tokenized past
/// what can fit (no token is shorter than one byte).
pub(crate) fn clip(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Splits `ids` into batches whose padded size (rows x longest row) stays within
/// `token_budget` and whose row count stays within `max_batch`. Longest first, so each batch
/// holds rows of similar length (length bucketing) and padding waste stays small.
pub fn plan_batches(lens: &[usize], token_budget: usize, max_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
    let mut batches = vec![];
    let mut cur: Vec<usize> = vec![];
    let mut cur_max = 0;
    for i in order {
        let max = cur_max.max(lens[i]);
        if !cur.is_empty() && ((cur.len() + 1) * max > token_budget || cur.len() >= max_batch) {
            batches.push(std::mem::take(&mut cur));
            cur_max = 0;
        }
        cur_max = cur_max.max(lens[i]);
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// Batching options of a scoring run.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Padded tokens per forward pass.
    pub token_budget: usize,
    pub max_batch: usize,
}

impl BatchOptions {
    pub fn for_placement(p: Placement) -> Self {
        if p.device.is_cuda() {
            BatchOptions {
                token_budget: 65_536,
                max_batch: 512,
            }
        } else {
            // Small batches keep a layer's activations in cache: on 2 cores, grading at 2048
            // tokens rather than 8192 was 1.07x faster for MiniLM fp32, 1.17x for int8 and
            // 1.36x for SmolLM2 (BENCHMARKS.md).
            BatchOptions {
                token_budget: 2_048,
                max_batch: 64,
            }
        }
    }
}

/// `grader`'s grading of a distribution it gave: the bin of its expected grade when it was
/// calibrated, else its most likely grade.
pub fn grading_for(grader: &dyn Grader, distribution: Vec<f32>) -> Grading {
    match grader.grade_cutpoints() {
        Some(c) => Grading::from_expected_grade(distribution, c),
        None => Grading::from_distribution(distribution),
    }
}

/// Grades encoded pairs, in input order. `progress(n)` is called after each batch with the
/// number of pairs it held.
pub fn grade(
    grader: &dyn Grader,
    pairs: &[EncodedPair],
    opts: BatchOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Grading>> {
    let lens: Vec<usize> = pairs.iter().map(|p| p.ids.len()).collect();
    let mut out: Vec<Option<Grading>> = vec![None; pairs.len()];
    tch::no_grad(|| -> Result<()> {
        for batch in plan_batches(&lens, opts.token_budget, opts.max_batch) {
            let refs: Vec<&EncodedPair> = batch.iter().map(|&i| &pairs[i]).collect();
            let probs = grader
                .grade_logits(&refs, false)?
                .to_kind(Kind::Float)
                .softmax(-1, Kind::Float);
            let probs = probs.to_device(tch::Device::Cpu);
            let flat: Vec<f32> = Vec::<f32>::try_from(probs.flatten(0, -1))?;
            let g = grader.num_grades();
            for (row, &i) in batch.iter().enumerate() {
                out[i] = Some(grading_for(grader, flat[row * g..(row + 1) * g].to_vec()));
            }
            progress(batch.len());
        }
        Ok(())
    })?;
    Ok(out
        .into_iter()
        .map(|g| g.expect("every pair is in one batch"))
        .collect())
}

/// A tokenizer belongs to a model when its vocabulary fills the embedding table: never larger,
/// and at most ~10% smaller (tables are padded to a multiple of 64 or 128, not more).
pub(crate) fn check_vocab(tokenizer: &TextTokenizer, vocab_size: usize) -> Result<()> {
    let n = tokenizer.vocab_size();
    if n > vocab_size || (n as f64) < 0.9 * vocab_size as f64 {
        return Err(SlmError::Tokenizer {
            path: tokenizer.path().to_path_buf(),
            message: format!(
                "does not match the model: {n} tokens, the model's vocab_size is {vocab_size}"
            ),
        });
    }
    Ok(())
}

/// A BERT tokenizer's `[CLS]` and `[SEP]` ids.
pub(crate) fn bert_specials(tokenizer: &TextTokenizer) -> Result<(i64, i64)> {
    let special = |s: &str| {
        tokenizer.token_id(s).ok_or_else(|| SlmError::Tokenizer {
            path: tokenizer.path().to_path_buf(),
            message: format!("no `{s}` token: not a BERT tokenizer"),
        })
    };
    Ok((special("[CLS]")?, special("[SEP]")?))
}

/// Right-pads rows to one `[B, T]` int64 tensor.
pub(crate) fn pad_right(rows: &[&[i64]], pad: i64, device: tch::Device) -> (Tensor, Vec<i64>) {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * t);
    let mut lens = Vec::with_capacity(rows.len());
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(pad, t - r.len()));
        lens.push(r.len() as i64);
    }
    let x = Tensor::from_slice(&flat)
        .view([rows.len() as i64, t as i64])
        .to_device(device);
    (x, lens)
}

// ---------------------------------------------------------------------------------------------
// Decoder grader

const DOC_MARKER: &str = "\u{1}DOCUMENT\u{1}";

pub struct DecoderGrader {
    pub lm: DecoderLm,
    pub tokenizer: TextTokenizer,
    grade_labels: Vec<String>,
    grade_ids: Tensor,
    limits: InputLimits,
    name: String,
    /// Text and tokens every prompt starts with (system turn and the opening of the user turn).
    shared_prefix_text: String,
    shared_prefix: Vec<i64>,
    /// Keys/values of `shared_prefix` for inference, computed on first use and dropped by
    /// any training step (the weights change).
    prefix_cache: std::sync::Mutex<Option<KvCache>>,
    prompt: GradePrompt,
    cutpoints: Option<Vec<f32>>,
}

impl DecoderGrader {
    /// Loads a decoder LM folder and checks that each grade label is one token.
    pub fn load(
        dir: &Path,
        grade_labels: &[String],
        placement: Placement,
        max_len: usize,
    ) -> Result<Self> {
        let lm = DecoderLm::load(dir, placement, max_len)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        Self::from_parts(lm, tokenizer, grade_labels, dir.display().to_string())
    }

    pub fn from_parts(
        lm: DecoderLm,
        tokenizer: TextTokenizer,
        grade_labels: &[String],
        name: String,
    ) -> Result<Self> {
        check_vocab(&tokenizer, lm.config.vocab_size)?;
        let mut ids = vec![];
        for label in grade_labels {
            let enc = tokenizer.encode(label)?;
            if enc.len() != 1 {
                return Err(SlmError::Tokenizer {
                    path: tokenizer.path().to_path_buf(),
                    message: format!(
                        "grade label `{label}` is {} tokens; each grade must be one token",
                        enc.len()
                    ),
                });
            }
            ids.push(enc[0]);
        }
        let grade_ids = Tensor::from_slice(&ids).to_device(lm.placement.device);
        let mut grader = DecoderGrader {
            lm,
            tokenizer,
            grade_labels: grade_labels.to_vec(),
            grade_ids,
            limits: InputLimits::default(),
            name,
            shared_prefix_text: String::new(),
            shared_prefix: vec![],
            prefix_cache: std::sync::Mutex::new(None),
            prompt: GradePrompt::default(),
            cutpoints: None,
        };
        grader.shared_prefix_text = grader.probe_shared_prefix()?;
        grader.shared_prefix = grader.tokenizer.encode(&grader.shared_prefix_text)?;
        Ok(grader)
    }

    /// Grades with another prompt version from now on.
    pub fn set_prompt(&mut self, prompt: GradePrompt) -> Result<()> {
        if prompt != self.prompt {
            self.prompt = prompt;
            self.shared_prefix_text = self.probe_shared_prefix()?;
            self.shared_prefix = self.tokenizer.encode(&self.shared_prefix_text)?;
            *self.prefix_cache.lock().expect("prefix cache lock") = None;
        }
        Ok(())
    }

    pub fn prompt(&self) -> GradePrompt {
        self.prompt
    }

    /// The part of every prompt before the query, when tokenizing it apart from the rest gives
    /// the same ids as tokenizing the whole prompt (true of templates whose user turn opens
    /// after a special token and a newline); else empty, and no prefix is shared.
    fn probe_shared_prefix(&self) -> Result<String> {
        let probe = Pair {
            id: "probe".into(),
            query: "probe".into(),
            title: None,
            body: "probe".into(),
            metadata: Default::default(),
        };
        let (prefix, _) = self.prompt_parts(&probe)?;
        let Some(cut) = prefix.find("Query: ") else {
            return Ok(String::new());
        };
        let t = &self.tokenizer;
        let mut apart = t.encode(&prefix[..cut])?;
        apart.extend(t.encode(&prefix[cut..])?);
        match apart == t.encode(&prefix)? {
            true => Ok(prefix[..cut].to_string()),
            false => Ok(String::new()),
        }
    }

    /// Grade logits for a batch whose rows all start with the shared prefix, reusing its
    /// cached keys/values: the prefix is computed once per model, not once per pair.
    fn grade_logits_prefixed(&self, batch: &[&EncodedPair]) -> Result<Tensor> {
        let p = self.shared_prefix.len();
        let device = self.lm.placement.device;
        let mut guard = self.prefix_cache.lock().expect("prefix cache lock");
        if guard.is_none() {
            let ids = Tensor::from_slice(&self.shared_prefix)
                .unsqueeze(0)
                .to_device(device);
            let mut cache = KvCache::new(self.lm.num_layers());
            let _hidden =
                tch::no_grad(|| self.lm.forward(&ids, &Attention::Causal, Some(&mut cache)))?;
            *guard = Some(cache);
        }
        let prefix = guard.as_ref().expect("just filled");
        let rows: Vec<&[i64]> = batch.iter().map(|e| &e.ids[p..]).collect();
        let (ids, lens) = pad_right(&rows, self.tokenizer.pad_id, device);
        let hidden = self
            .lm
            .forward(&ids, &Attention::Prefixed { prefix }, None)?;
        Ok(self.read_answer(&hidden, &lens))
    }

    /// Grade logits at each row's last real token.
    fn read_answer(&self, hidden: &Tensor, lens: &[i64]) -> Tensor {
        let (b, t, h) = hidden.size3().expect("hidden is [B, T, H]");
        let last: Vec<i64> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| i as i64 * t + l - 1)
            .collect();
        let last = Tensor::from_slice(&last).to_device(hidden.device());
        let answer = hidden.reshape([b * t, h]).index_select(0, &last);
        self.lm
            .token_logits(&answer, &self.grade_ids)
            .to_kind(Kind::Float)
    }

    pub fn grade_token_ids(&self) -> Vec<i64> {
        Vec::<i64>::try_from(&self.grade_ids.to_device(tch::Device::Cpu)).unwrap_or_default()
    }

    /// The chat prompt for a pair, as text, with the document body in place.
    pub fn prompt_text(&self, pair: &Pair) -> Result<String> {
        let t = &self.tokenizer;
        let messages = grade_messages_for(self.prompt, pair, self.grade_labels.len(), |s| {
            t.sanitize(s)
        });
        t.render_chat(&messages, true)
    }

    fn prompt_parts(&self, pair: &Pair) -> Result<(String, String)> {
        let t = &self.tokenizer;
        let messages = grade_messages_with_body(
            self.prompt,
            pair,
            self.grade_labels.len(),
            &|s: &str| t.sanitize(s),
            DOC_MARKER,
        );
        let text = t.render_chat(&messages, true)?;
        let (a, b) = text
            .split_once(DOC_MARKER)
            .ok_or_else(|| SlmError::Tokenizer {
                path: t.path().to_path_buf(),
                message: "the chat template drops the document from the grading prompt".into(),
            })?;
        Ok((a.to_string(), b.to_string()))
    }
}

impl Grader for DecoderGrader {
    fn describe(&self) -> String {
        format!("decoder:{} prompt={}", self.name, self.prompt.version())
    }
    fn num_grades(&self) -> usize {
        self.grade_labels.len()
    }
    fn grade_cutpoints(&self) -> Option<&[f32]> {
        self.cutpoints.as_deref()
    }
    fn set_grade_cutpoints(&mut self, cutpoints: Option<Vec<f32>>) -> Result<()> {
        self.cutpoints = checked_cutpoints(cutpoints, self.grade_labels.len())?;
        Ok(())
    }
    fn max_len(&self) -> usize {
        self.lm.max_len
    }
    fn placement(&self) -> Placement {
        self.lm.placement
    }

    fn encode_pair(&self, pair: &Pair) -> Result<EncodedPair> {
        validate_pair(pair, &self.limits)?;
        let q_tokens = self.tokenizer.encode(pair.query.trim())?.len();
        if q_tokens > self.limits.max_query_tokens {
            return Err(SlmError::input(
                &pair.id,
                "query",
                format!(
                    "{q_tokens} tokens, over the limit of {}",
                    self.limits.max_query_tokens
                ),
            ));
        }
        let (prefix, suffix) = self.prompt_parts(pair)?;
        let own = prefix
            .strip_prefix(&self.shared_prefix_text)
            .expect("every prompt starts with the shared prefix");
        let mut ids = self.shared_prefix.clone();
        ids.extend(self.tokenizer.encode(own)?);
        let suffix_ids = self.tokenizer.encode(&suffix)?;
        let room = self.lm.max_len.saturating_sub(ids.len() + suffix_ids.len());
        if room < 16 {
            return Err(SlmError::input(
                &pair.id,
                "title",
                format!(
                    "query, title and metadata take {} of the {} tokens, leaving no room for the document",
                    ids.len() + suffix_ids.len(),
                    self.lm.max_len
                ),
            ));
        }
        let body = self.tokenizer.sanitize(pair.body.trim());
        let mut body_ids = self.tokenizer.encode(clip(&body, room * 16))?;
        let truncated = body_ids.len() > room;
        body_ids.truncate(room);
        ids.extend(body_ids);
        ids.extend(suffix_ids);
        Ok(EncodedPair {
            ids,
            type_ids: vec![],
            truncated,
        })
    }

    fn grade_logits(&self, batch: &[&EncodedPair], train: bool) -> Result<Tensor> {
        let p = self.shared_prefix.len();
        let all_prefixed = batch
            .iter()
            .all(|e| e.ids.len() > p && e.ids[..p] == self.shared_prefix[..]);
        if train {
            *self.prefix_cache.lock().expect("prefix cache lock") = None;
        } else if all_prefixed && p > 0 {
            return self.grade_logits_prefixed(batch);
        }
        let rows: Vec<&[i64]> = batch.iter().map(|p| p.ids.as_slice()).collect();
        let (ids, lens) = pad_right(&rows, self.tokenizer.pad_id, self.lm.placement.device);
        let hidden = self.lm.forward(&ids, &Attention::Causal, None)?;
        Ok(self.read_answer(&hidden, &lens))
    }

    fn var_store(&self) -> &tch::nn::VarStore {
        &self.lm.vs
    }

    fn flops(&self, len: usize) -> f64 {
        // what the prefixed path executes: the pair's own tokens, attending to the prefix too
        let c = &self.lm.config;
        let p = self.shared_prefix.len().min(len);
        let own = len - p;
        let attn_prefix =
            2.0 * 2.0 * (own * p) as f64 * (c.num_heads * c.head_dim) as f64 * c.num_layers as f64;
        c.forward_flops(own) + attn_prefix
    }

    fn save(&self, dir: &Path, provenance: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| SlmError::io(dir, e))?;
        crate::weights::save_var_store(&self.lm.vs, &dir.join("model.safetensors"), |n| {
            n.to_string()
        })?;
        let mut config = self.lm.config.raw.clone();
        config["torch_dtype"] = serde_json::json!(dtype_name(self.lm.placement.kind));
        write_json(&dir.join("config.json"), &config)?;
        copy_tokenizer_files(
            self.tokenizer.path().parent().unwrap_or(Path::new(".")),
            dir,
        )?;
        write_json(
            &dir.join("labelfleet.json"),
            &serde_json::json!({
                "kind": "decoder",
                "grade_labels": self.grade_labels,
                "prompt_version": self.prompt.version(),
                "grade_cutpoints": self.cutpoints,
                "provenance": provenance,
            }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder grader

pub struct EncoderGrader {
    pub model: CrossEncoder,
    pub tokenizer: TextTokenizer,
    grade_labels: Vec<String>,
    cls: i64,
    sep: i64,
    limits: InputLimits,
    name: String,
    pub max_len: usize,
    cutpoints: Option<Vec<f32>>,
}

impl EncoderGrader {
    pub fn load(
        dir: &Path,
        grade_labels: &[String],
        placement: Placement,
        max_len: usize,
    ) -> Result<Self> {
        Self::load_layers(dir, grade_labels, placement, max_len, None)
    }

    /// Loads keeping only the bottom `keep_layers` layers (see [`CrossEncoder::load_layers`]).
    pub fn load_layers(
        dir: &Path,
        grade_labels: &[String],
        placement: Placement,
        max_len: usize,
        keep_layers: Option<usize>,
    ) -> Result<Self> {
        let model = CrossEncoder::load_layers(dir, grade_labels.len(), placement, keep_layers)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        check_vocab(&tokenizer, model.config.vocab_size)?;
        let (cls, sep) = bert_specials(&tokenizer)?;
        let max_len = max_len.min(model.max_len);
        Ok(EncoderGrader {
            model,
            tokenizer,
            grade_labels: grade_labels.to_vec(),
            cls,
            sep,
            limits: InputLimits::default(),
            name: dir.display().to_string(),
            max_len,
            cutpoints: None,
        })
    }
}

impl Grader for EncoderGrader {
    fn describe(&self) -> String {
        format!("cross-encoder:{}", self.name)
    }
    fn num_grades(&self) -> usize {
        self.grade_labels.len()
    }
    fn grade_cutpoints(&self) -> Option<&[f32]> {
        self.cutpoints.as_deref()
    }
    fn set_grade_cutpoints(&mut self, cutpoints: Option<Vec<f32>>) -> Result<()> {
        self.cutpoints = checked_cutpoints(cutpoints, self.grade_labels.len())?;
        Ok(())
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
    fn placement(&self) -> Placement {
        self.model.placement
    }

    fn encode_pair(&self, pair: &Pair) -> Result<EncodedPair> {
        validate_pair(pair, &self.limits)?;
        let q = self.tokenizer.encode(pair.query.trim())?;
        if q.len() > self.limits.max_query_tokens {
            return Err(SlmError::input(
                &pair.id,
                "query",
                format!(
                    "{} tokens, over the limit of {}",
                    q.len(),
                    self.limits.max_query_tokens
                ),
            ));
        }
        let doc_text = document_text(pair);
        let room = self.max_len.saturating_sub(q.len() + 3);
        let mut d = self.tokenizer.encode(clip(&doc_text, room * 16))?;
        let truncated = d.len() > room;
        d.truncate(room);
        let mut ids = Vec::with_capacity(q.len() + d.len() + 3);
        ids.push(self.cls);
        ids.extend(&q);
        ids.push(self.sep);
        let first = ids.len();
        ids.extend(&d);
        ids.push(self.sep);
        let mut type_ids = vec![0; first];
        type_ids.resize(ids.len(), 1);
        Ok(EncodedPair {
            ids,
            type_ids,
            truncated,
        })
    }

    fn grade_logits(&self, batch: &[&EncodedPair], train: bool) -> Result<Tensor> {
        let device = self.model.placement.device;
        let rows: Vec<&[i64]> = batch.iter().map(|p| p.ids.as_slice()).collect();
        let (ids, lens) = pad_right(&rows, self.model.config.pad_token_id, device);
        let types: Vec<&[i64]> = batch.iter().map(|p| p.type_ids.as_slice()).collect();
        let (type_ids, _) = pad_right(&types, 0, device);
        let t = ids.size()[1];
        let lens_t = Tensor::from_slice(&lens).to_device(device).unsqueeze(1);
        let mask = Tensor::arange(t, (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&lens_t);
        Ok(self
            .model
            .grade_logits(&ids, &type_ids, &mask, train)?
            .to_kind(Kind::Float))
    }

    fn var_store(&self) -> &tch::nn::VarStore {
        &self.model.vs
    }

    fn flops(&self, len: usize) -> f64 {
        self.model.config.forward_flops(len, TopRows::First)
    }

    fn save(&self, dir: &Path, provenance: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| SlmError::io(dir, e))?;
        crate::weights::save_var_store(&self.model.vs, &dir.join("model.safetensors"), |n| {
            n.to_string()
        })?;
        let mut config = self.model.config.raw.clone();
        let n = self.grade_labels.len();
        config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
        config["num_labels"] = serde_json::json!(n);
        config["id2label"] = (0..n)
            .map(|i| (i.to_string(), serde_json::json!(format!("grade_{i}"))))
            .collect();
        config["label2id"] = (0..n)
            .map(|i| (format!("grade_{i}"), serde_json::json!(i)))
            .collect();
        config["torch_dtype"] = serde_json::json!(dtype_name(self.model.placement.kind));
        write_json(&dir.join("config.json"), &config)?;
        copy_tokenizer_files(
            self.tokenizer.path().parent().unwrap_or(Path::new(".")),
            dir,
        )?;
        let record = serde_json::json!({
            "kind": "cross-encoder",
            "grade_labels": self.grade_labels,
            "grade_cutpoints": self.cutpoints,
            "provenance": provenance,
        });
        write_json(&dir.join("labelfleet.json"), &record)?;
        let card = labelfleet_types::card::model_card(&record, &Default::default());
        std::fs::write(dir.join("README.md"), card).map_err(|e| SlmError::io(dir, e))
    }
}

fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    std::fs::write(path, text).map_err(|e| SlmError::io(path, e))
}

fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "generation_config.json",
    ] {
        let src = from.join(f);
        if src.is_file() {
            std::fs::copy(&src, to.join(f)).map_err(|e| SlmError::io(&src, e))?;
        }
    }
    Ok(())
}

/// Which kind of grader a model folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraderKind {
    Decoder,
    CrossEncoder,
}

pub fn detect_kind(dir: &Path) -> Result<GraderKind> {
    let path = dir.join("config.json");
    let v = crate::config::read_json(&path)?;
    match v.get("model_type").and_then(|m| m.as_str()) {
        Some("bert") => Ok(GraderKind::CrossEncoder),
        Some("llama" | "qwen2" | "mistral" | "phi3") => Ok(GraderKind::Decoder),
        Some(other) => Err(SlmError::config(
            &path,
            format!("model_type `{other}` is not supported"),
        )),
        None => Err(SlmError::config(&path, "no `model_type`")),
    }
}

/// Loads whichever grader a folder holds, with the grade labels of its `labelfleet.json` when
/// it is a checkpoint we wrote, else `grade_labels`. A decoder grades with `prompt`; an encoder
/// has no prompt and ignores it.
pub fn load_grader_with_prompt(
    dir: &Path,
    grade_labels: &[String],
    placement: Placement,
    max_len: usize,
    prompt: GradePrompt,
) -> Result<Box<dyn Grader>> {
    if detect_kind(dir)? == GraderKind::Decoder {
        let record = CheckpointRecord::read(dir)?;
        let labels = record.grade_labels.unwrap_or_else(|| grade_labels.to_vec());
        let mut g = DecoderGrader::load(dir, &labels, placement, max_len)?;
        g.set_prompt(prompt)?;
        g.set_grade_cutpoints(record.grade_cutpoints)?;
        return Ok(Box::new(g));
    }
    load_grader(dir, grade_labels, placement, max_len)
}

/// What a checkpoint we wrote records in its `labelfleet.json` about its grades (nothing for
/// a folder without one).
#[derive(Default)]
struct CheckpointRecord {
    grade_labels: Option<Vec<String>>,
    grade_cutpoints: Option<Vec<f32>>,
}

impl CheckpointRecord {
    fn read(dir: &Path) -> Result<Self> {
        let meta = dir.join("labelfleet.json");
        if !meta.is_file() {
            return Ok(Self::default());
        }
        let v = crate::config::read_json(&meta)?;
        let grade_labels: Vec<String> = serde_json::from_value(v["grade_labels"].clone())
            .map_err(|e| SlmError::config(&meta, format!("grade_labels: {e}")))?;
        let grade_cutpoints: Option<Vec<f32>> =
            serde_json::from_value(v["grade_cutpoints"].clone())
                .map_err(|e| SlmError::config(&meta, format!("grade_cutpoints: {e}")))?;
        if let Some(c) = &grade_cutpoints {
            check_cutpoints(c, grade_labels.len())
                .map_err(|e| SlmError::config(&meta, format!("grade_cutpoints: {e}")))?;
        }
        Ok(CheckpointRecord {
            grade_labels: Some(grade_labels),
            grade_cutpoints,
        })
    }
}

/// `cutpoints`, when they suit a scale of `grades` grades.
fn checked_cutpoints(cutpoints: Option<Vec<f32>>, grades: usize) -> Result<Option<Vec<f32>>> {
    if let Some(c) = &cutpoints {
        check_cutpoints(c, grades).map_err(SlmError::Argument)?;
    }
    Ok(cutpoints)
}

/// Cutpoints of a scale of `grades` grades: one fewer, finite, ascending.
fn check_cutpoints(cutpoints: &[f32], grades: usize) -> std::result::Result<(), String> {
    if cutpoints.len() + 1 != grades {
        return Err(format!(
            "{} cutpoints for {grades} grades; a scale of n grades has n - 1",
            cutpoints.len()
        ));
    }
    if cutpoints.iter().any(|c| !c.is_finite()) {
        return Err("a cutpoint is not a finite number".into());
    }
    if cutpoints.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("{cutpoints:?} are not in ascending order"));
    }
    Ok(())
}

/// Loads whichever grader a folder holds, with the grade labels (and calibrated cutpoints) of
/// its `labelfleet.json` when it is a checkpoint we wrote, else `grade_labels`.
pub fn load_grader(
    dir: &Path,
    grade_labels: &[String],
    placement: Placement,
    max_len: usize,
) -> Result<Box<dyn Grader>> {
    let record = CheckpointRecord::read(dir)?;
    let labels = record.grade_labels.unwrap_or_else(|| grade_labels.to_vec());
    let mut grader: Box<dyn Grader> = match detect_kind(dir)? {
        GraderKind::Decoder => Box::new(DecoderGrader::load(dir, &labels, placement, max_len)?),
        GraderKind::CrossEncoder => {
            Box::new(EncoderGrader::load(dir, &labels, placement, max_len)?)
        }
    };
    grader.set_grade_cutpoints(record.grade_cutpoints)?;
    Ok(grader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_budget_and_bucket_by_length() {
        let lens = vec![10, 200, 30, 190, 20, 5, 180];
        let batches = plan_batches(&lens, 400, 64);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for b in &batches {
            let max = b.iter().map(|&i| lens[i]).max().unwrap();
            assert!(
                b.len() * max <= 400 || b.len() == 1,
                "batch {b:?} over budget"
            );
        }
        // longest rows are grouped together
        assert_eq!(batches[0], vec![1, 3]);
    }

    #[test]
    fn batches_respect_row_cap() {
        let lens = vec![4; 10];
        let batches = plan_batches(&lens, 1_000_000, 3);
        assert_eq!(
            batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
    }

    #[test]
    fn clip_stays_on_char_boundary() {
        let s = "ééé";
        assert_eq!(clip(s, 3), "é");
        assert_eq!(clip(s, 100), s);
    }
}
