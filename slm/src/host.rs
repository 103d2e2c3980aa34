//! The engine thread: one OS thread that owns the loaded models (libtorch modules are not
//! shared across threads) and runs grading and query-synthesis requests one after another.
//! Models are loaded on first use and kept (two graders and one generator at most), so a new
//! model, such as a pushed checkpoint, is picked up by the next request that names it and a
//! swap never happens in the middle of one. A server role talks to it through [`EngineThread`],
//! whose calls are async and never block the caller's runtime.

use crate::generate::SamplingParams;
use crate::grading::{
    default_grade_labels, grade, load_grader_with_prompt, BatchOptions, GradePrompt, Grader,
    Grading, Pair,
};
use crate::querygen::{prompt_ids, synthesize, GeneratedQuery, SeedDocument};
use crate::similarity::{Calibration, DenseIndex, Feedback, SentenceEncoder, SimilarityJudge};
use crate::{DecoderLm, Placement, TextTokenizer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// New tokens per generated query.
pub const QUERY_MAX_NEW_TOKENS: usize = 32;

/// Why a request was not done, and whether another attempt may succeed (false: the input
/// itself is bad, another attempt would fail the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFailure {
    pub reason: String,
    pub retryable: bool,
}

impl EngineFailure {
    fn transient(reason: String) -> Self {
        EngineFailure {
            reason,
            retryable: true,
        }
    }
    fn bad_input(reason: String) -> Self {
        EngineFailure {
            reason,
            retryable: false,
        }
    }
}

/// Grade `pairs` with the model in `model` (a decoder LM with `prompt`, or a cross-encoder).
#[derive(Debug, Clone)]
pub struct GradeRequest {
    pub model: PathBuf,
    pub prompt: GradePrompt,
    /// The grade labels a decoder reads out (empty: "0".."3").
    pub grade_labels: Vec<String>,
    /// Longest input in tokens (documents are cut to fit).
    pub max_len: usize,
    pub pairs: Vec<Pair>,
}

/// The grades of a request's pairs, in order, and the model that gave them.
#[derive(Debug, Clone)]
pub struct Graded {
    pub gradings: Vec<Grading>,
    pub model: String,
}

/// Judge `pairs` by the similarity of the sentence encoder in `encoder`, with feedback from and
/// calibration against a corpus (see [`crate::similarity`]).
#[derive(Clone)]
pub struct SimilarityRequest {
    pub encoder: PathBuf,
    /// Names the corpus: the engine keeps the index it builds per encoder, corpus and length.
    pub corpus_id: String,
    /// The corpus documents' texts, read only when that index is not built yet.
    pub corpus: Arc<Vec<String>>,
    pub feedback: Feedback,
    /// Longest input in tokens (texts are cut to fit).
    pub max_len: usize,
    pub pairs: Vec<Pair>,
}

/// Write queries for `seeds` with the decoder LM in `model`.
#[derive(Debug, Clone)]
pub struct SynthesisRequest {
    pub model: PathBuf,
    pub max_len: usize,
    pub seeds: Vec<SeedDocument>,
    pub queries_per_document: usize,
    pub metadata_queries_per_document: usize,
    /// The run's seed: with the seeds' ids it fixes the sampling, so the same documents give
    /// the same queries on any worker and any attempt.
    pub seed: u64,
}

type Reply<T> = oneshot::Sender<Result<T, EngineFailure>>;

enum Work {
    Grade(GradeRequest, Reply<Graded>),
    Judge(SimilarityRequest, Reply<Graded>),
    Synthesize(SynthesisRequest, Reply<Vec<GeneratedQuery>>),
}

/// Handle to the engine thread (cheap to clone).
#[derive(Clone)]
pub struct EngineThread {
    tx: mpsc::Sender<Work>,
    /// Pairs graded since start (for metrics).
    pub pairs: Arc<AtomicU64>,
}

impl EngineThread {
    /// Starts the engine thread. `threads` caps libtorch's intra-op threads (0: its default).
    pub fn start(placement: Placement, threads: usize) -> std::io::Result<EngineThread> {
        let (tx, mut rx) = mpsc::channel::<Work>(64);
        let pairs = Arc::new(AtomicU64::new(0));
        let counter = pairs.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                if threads > 0 {
                    tch::set_num_threads(threads as i32);
                }
                let mut host = Host {
                    placement,
                    graders: HashMap::new(),
                    generators: HashMap::new(),
                    judges: HashMap::new(),
                };
                while let Some(work) = rx.blocking_recv() {
                    match work {
                        Work::Grade(req, reply) => {
                            let n = req.pairs.len() as u64;
                            let graded = host.grade(&req);
                            if graded.is_ok() {
                                counter.fetch_add(n, Ordering::Relaxed);
                            }
                            let _ = reply.send(graded);
                        }
                        Work::Judge(req, reply) => {
                            let n = req.pairs.len() as u64;
                            let judged = host.judge(&req);
                            if judged.is_ok() {
                                counter.fetch_add(n, Ordering::Relaxed);
                            }
                            let _ = reply.send(judged);
                        }
                        Work::Synthesize(req, reply) => {
                            let _ = reply.send(host.synthesize(&req));
                        }
                    }
                }
            })?;
        Ok(EngineThread { tx, pairs })
    }

    /// Grades a request's pairs on the engine thread.
    pub async fn grade(&self, req: GradeRequest) -> Result<Graded, EngineFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Grade(req, reply), rx).await
    }

    /// Judges a request's pairs by similarity on the engine thread.
    pub async fn judge(&self, req: SimilarityRequest) -> Result<Graded, EngineFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Judge(req, reply), rx).await
    }

    /// Writes queries for a request's seed documents on the engine thread.
    pub async fn synthesize(
        &self,
        req: SynthesisRequest,
    ) -> Result<Vec<GeneratedQuery>, EngineFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Synthesize(req, reply), rx).await
    }

    async fn call<T>(
        &self,
        work: Work,
        rx: oneshot::Receiver<Result<T, EngineFailure>>,
    ) -> Result<T, EngineFailure> {
        let stopped = || EngineFailure::transient("engine thread stopped".into());
        self.tx.send(work).await.map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

struct Host {
    placement: Placement,
    graders: HashMap<(PathBuf, usize, GradePrompt), Box<dyn Grader>>,
    generators: HashMap<(PathBuf, usize), (DecoderLm, TextTokenizer)>,
    judges: HashMap<JudgeKey, SimilarityJudge>,
}

/// A similarity judge's encoder, corpus, length and feedback (depth, weight's bits).
type JudgeKey = (PathBuf, String, usize, usize, u64);

impl Host {
    fn grader(&mut self, req: &GradeRequest) -> Result<&dyn Grader, EngineFailure> {
        let key = (req.model.clone(), req.max_len, req.prompt);
        if !self.graders.contains_key(&key) {
            let labels = if req.grade_labels.is_empty() {
                default_grade_labels()
            } else {
                req.grade_labels.clone()
            };
            let g = load_grader_with_prompt(
                &req.model,
                &labels,
                self.placement,
                req.max_len,
                req.prompt,
            )
            .map_err(|e| {
                EngineFailure::transient(format!("loading model {}: {e}", req.model.display()))
            })?;
            tracing::info!(model = %g.describe(), "model loaded");
            // Keep at most two models resident: the pinned student and one other.
            if self.graders.len() >= 2 {
                self.graders.clear();
            }
            self.graders.insert(key.clone(), g);
        }
        Ok(self.graders[&key].as_ref())
    }

    fn grade(&mut self, req: &GradeRequest) -> Result<Graded, EngineFailure> {
        let placement = self.placement;
        let grader = self.grader(req)?;
        let mut encoded = Vec::with_capacity(req.pairs.len());
        for (i, pair) in req.pairs.iter().enumerate() {
            let e = grader
                .encode_pair(pair)
                .map_err(|e| EngineFailure::bad_input(format!("pair `{}` (#{i}): {e}", pair.id)))?;
            encoded.push(e);
        }
        let opts = BatchOptions::for_placement(placement);
        let gradings = grade(grader, &encoded, opts, &mut |_| {})
            .map_err(|e| EngineFailure::transient(format!("grading: {e}")))?;
        Ok(Graded {
            gradings,
            model: grader.describe(),
        })
    }

    fn similarity_judge(
        &mut self,
        req: &SimilarityRequest,
    ) -> Result<&SimilarityJudge, EngineFailure> {
        let f = req.feedback;
        let key = (
            req.encoder.clone(),
            req.corpus_id.clone(),
            req.max_len,
            f.depth,
            f.weight.to_bits(),
        );
        if !self.judges.contains_key(&key) {
            let dir = &req.encoder;
            let encoder = SentenceEncoder::load(dir, self.placement, req.max_len).map_err(|e| {
                EngineFailure::transient(format!("loading encoder {}: {e}", dir.display()))
            })?;
            let texts: Vec<&str> = req.corpus.iter().map(String::as_str).collect();
            let started = std::time::Instant::now();
            let opts = BatchOptions::for_placement(self.placement);
            let index = DenseIndex::build(&encoder, &texts, opts, &mut |_| {}).map_err(|e| {
                EngineFailure::bad_input(format!("corpus `{}`: {e}", req.corpus_id))
            })?;
            let judge = SimilarityJudge::new(encoder, index, f, Calibration::default())
                .map_err(|e| EngineFailure::bad_input(e.to_string()))?;
            tracing::info!(
                judge = %judge.describe(),
                corpus = %req.corpus_id,
                seconds = started.elapsed().as_secs_f64(),
                "similarity judge ready"
            );
            // one corpus's judge at a time besides the one being built
            if self.judges.len() >= 2 {
                self.judges.clear();
            }
            self.judges.insert(key.clone(), judge);
        }
        Ok(&self.judges[&key])
    }

    fn judge(&mut self, req: &SimilarityRequest) -> Result<Graded, EngineFailure> {
        let placement = self.placement;
        let judge = self.similarity_judge(req)?;
        for (i, pair) in req.pairs.iter().enumerate() {
            judge
                .check_pair(pair)
                .map_err(|e| EngineFailure::bad_input(format!("pair `{}` (#{i}): {e}", pair.id)))?;
        }
        let opts = BatchOptions::for_placement(placement);
        let judged = judge
            .judge(&req.pairs, opts, &mut |_| {})
            .map_err(|e| EngineFailure::transient(format!("similarity: {e}")))?;
        Ok(Graded {
            gradings: judged.into_iter().map(|j| j.grading).collect(),
            model: judge.describe(),
        })
    }

    fn generator(
        &mut self,
        req: &SynthesisRequest,
    ) -> Result<&(DecoderLm, TextTokenizer), EngineFailure> {
        let key = (req.model.clone(), req.max_len);
        if !self.generators.contains_key(&key) {
            let dir = &req.model;
            let loaded = DecoderLm::load(dir, self.placement, req.max_len)
                .and_then(|lm| Ok((lm, TextTokenizer::from_dir(dir)?)))
                .map_err(|e| {
                    EngineFailure::transient(format!("loading generator {}: {e}", dir.display()))
                })?;
            tracing::info!(model = %dir.display(), "generator loaded");
            self.generators.clear();
            self.generators.insert(key.clone(), loaded);
        }
        Ok(&self.generators[&key])
    }

    fn synthesize(&mut self, req: &SynthesisRequest) -> Result<Vec<GeneratedQuery>, EngineFailure> {
        if req.max_len < QUERY_MAX_NEW_TOKENS + 64 {
            return Err(EngineFailure::bad_input(format!(
                "max_tokens {} leaves no room for a prompt and {QUERY_MAX_NEW_TOKENS} new tokens",
                req.max_len
            )));
        }
        let (lm, tok) = self.generator(req)?;
        let max_prompt = req.max_len - QUERY_MAX_NEW_TOKENS;
        for (i, seed) in req.seeds.iter().enumerate() {
            prompt_ids(tok, seed, max_prompt).map_err(|e| {
                EngineFailure::bad_input(format!("document `{}` (#{i}): {e}", seed.id))
            })?;
        }
        let params = SamplingParams {
            max_new_tokens: QUERY_MAX_NEW_TOKENS,
            temperature: 0.8,
            top_p: 0.95,
            seed: req.seed ^ salt(&req.seeds),
        };
        synthesize(
            lm,
            tok,
            &req.seeds,
            req.queries_per_document.max(1),
            req.metadata_queries_per_document,
            &params,
            max_prompt,
        )
        .map_err(|e| EngineFailure::transient(format!("generation: {e}")))
    }
}

/// A sampling salt from the seed documents' ids: the same documents give the same queries in
/// any job with the same seed.
fn salt(seeds: &[SeedDocument]) -> u64 {
    let mut hasher = Sha256::new();
    for d in seeds {
        hasher.update(d.id.as_bytes());
        hasher.update([0x1f]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}
