//! The engine host: one OS thread that owns the loaded models (libtorch tensors are not
//! shared across threads) and grades tasks one after another. Models are loaded on first use
//! and kept; a pushed checkpoint is picked up by the next task that names it, so a swap never
//! happens in the middle of a task.

use labelfleet_proto::v1::{
    model_ref, pair_input, ApiUsage, Label, QueryHits, SyntheticQuery, Task, TaskKind,
};
use labelfleet_slm::generate::SamplingParams;
use labelfleet_slm::grading::{
    default_grade_labels, grade, load_grader_with_prompt, BatchOptions, GradePrompt, Grader, Pair,
};
use labelfleet_slm::querygen::{prompt_ids, synthesize, SeedDocument};
use labelfleet_slm::Placement;
use labelfleet_slm::{DecoderLm, TextTokenizer};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Default input length when a task does not set one.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// What running a task came to.
#[derive(Debug)]
pub enum Outcome {
    /// Labels of a grading task, queries of a synthesis task, or hits of a search task; and
    /// what an API teacher spent on them (None for a local model).
    Done {
        labels: Vec<Label>,
        queries: Vec<SyntheticQuery>,
        hits: Vec<QueryHits>,
        seconds: f64,
        api_usage: Option<ApiUsage>,
    },
    /// `retryable` false: the input itself is bad, another attempt would fail the same way.
    Failed { reason: String, retryable: bool },
}

struct Request {
    task: Task,
    reply: oneshot::Sender<Outcome>,
}

/// Handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Request>,
    /// Pairs graded since start (for metrics).
    pub pairs: Arc<AtomicU64>,
}

/// Where models come from.
#[derive(Debug, Clone)]
pub struct ModelSources {
    /// Folder holding pushed checkpoints, one sub-folder per checkpoint id.
    pub checkpoints: PathBuf,
}

impl Engine {
    /// Starts the engine thread. `threads` caps libtorch's intra-op threads (0: its default).
    pub fn start(placement: Placement, threads: usize, sources: ModelSources) -> Engine {
        let (tx, mut rx) = mpsc::channel::<Request>(64);
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
                    sources,
                    graders: HashMap::new(),
                    generators: HashMap::new(),
                };
                while let Some(req) = rx.blocking_recv() {
                    let n = req.task.pairs.len() as u64;
                    let outcome = if req.task.kind == TaskKind::SynthesizeQueries as i32 {
                        host.synthesize(&req.task)
                    } else {
                        host.run(&req.task)
                    };
                    if matches!(outcome, Outcome::Done { .. }) {
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                    let _ = req.reply.send(outcome);
                }
            })
            .expect("spawning the engine thread");
        Engine { tx, pairs }
    }

    /// Grades a task on the engine thread.
    pub async fn run(&self, task: Task) -> Outcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request { task, reply }).await.is_err() {
            return Outcome::Failed {
                reason: "engine thread stopped".into(),
                retryable: true,
            };
        }
        rx.await.unwrap_or(Outcome::Failed {
            reason: "engine thread stopped".into(),
            retryable: true,
        })
    }
}

struct Host {
    placement: Placement,
    sources: ModelSources,
    graders: HashMap<(PathBuf, usize, GradePrompt), Box<dyn Grader>>,
    generators: HashMap<(PathBuf, usize), (DecoderLm, TextTokenizer)>,
}

/// New tokens per generated query.
pub const QUERY_MAX_NEW_TOKENS: usize = 32;

impl Host {
    /// Writes queries for the task's documents with a local decoder LM.
    fn synthesize(&mut self, task: &Task) -> Outcome {
        let start = Instant::now();
        let (dir, _) = match self.model_dir(task) {
            Ok(d) => d,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    retryable: true,
                }
            }
        };
        let max_len = match task.max_tokens {
            0 => DEFAULT_MAX_TOKENS,
            n => n as usize,
        };
        if max_len < QUERY_MAX_NEW_TOKENS + 64 {
            return Outcome::Failed {
                reason: format!(
                    "max_tokens {max_len} leaves no room for a prompt and {QUERY_MAX_NEW_TOKENS} new tokens"
                ),
                retryable: false,
            };
        }
        let key = (dir.clone(), max_len);
        if !self.generators.contains_key(&key) {
            let loaded = DecoderLm::load(&dir, self.placement, max_len)
                .and_then(|lm| Ok((lm, TextTokenizer::from_dir(&dir)?)));
            match loaded {
                Ok(g) => {
                    tracing::info!(model = %dir.display(), "generator loaded");
                    self.generators.clear();
                    self.generators.insert(key.clone(), g);
                }
                Err(e) => {
                    return Outcome::Failed {
                        reason: format!("loading generator {}: {e}", dir.display()),
                        retryable: true,
                    }
                }
            }
        }
        let (lm, tok) = &self.generators[&key];
        let max_prompt = max_len - QUERY_MAX_NEW_TOKENS;
        let mut seeds = Vec::with_capacity(task.documents.len());
        for (i, d) in task.documents.iter().enumerate() {
            let seed = to_seed(d);
            if let Err(e) = prompt_ids(tok, &seed, max_prompt) {
                return Outcome::Failed {
                    reason: format!("document `{}` (#{i}): {e}", d.id),
                    retryable: false,
                };
            }
            seeds.push(seed);
        }
        // The same documents give the same queries on any worker, any attempt and in any job
        // with the same seed: the sampling seed is salted by the task's document ids.
        let mut hasher = Sha256::new();
        for d in &task.documents {
            hasher.update(d.id.as_bytes());
            hasher.update([0x1f]);
        }
        let digest = hasher.finalize();
        let salt = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        let params = SamplingParams {
            max_new_tokens: QUERY_MAX_NEW_TOKENS,
            temperature: 0.8,
            top_p: 0.95,
            seed: task.seed ^ salt,
        };
        let per_doc = task.queries_per_document.max(1) as usize;
        let metadata_per_doc = task.metadata_queries_per_document as usize;
        let generated = match synthesize(
            lm,
            tok,
            &seeds,
            per_doc,
            metadata_per_doc,
            &params,
            max_prompt,
        ) {
            Ok(g) => g,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("generation: {e}"),
                    retryable: true,
                }
            }
        };
        let mut per_doc_count: HashMap<String, usize> = HashMap::new();
        let queries = generated
            .into_iter()
            .map(|g| {
                let n = per_doc_count.entry(g.doc_id.clone()).or_insert(0);
                *n += 1;
                SyntheticQuery {
                    query_id: format!("{}-q{}", g.doc_id, n),
                    doc_id: g.doc_id,
                    text: g.query,
                    prompt_version: g.prompt_version,
                    metadata_field: g.metadata_field.unwrap_or_default(),
                }
            })
            .collect();
        Outcome::Done {
            labels: Vec::new(),
            queries,
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: None,
        }
    }

    fn run(&mut self, task: &Task) -> Outcome {
        let start = Instant::now();
        let (dir, checkpoint_id) = match self.model_dir(task) {
            Ok(d) => d,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    retryable: true,
                }
            }
        };
        let max_len = match task.max_tokens {
            0 => DEFAULT_MAX_TOKENS,
            n => n as usize,
        };
        let prompt = match GradePrompt::parse(&task.prompt_version) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("prompt_version: {e}"),
                    retryable: false,
                }
            }
        };
        let key = (dir.clone(), max_len, prompt);
        if !self.graders.contains_key(&key) {
            let labels = if task.grade_labels.is_empty() {
                default_grade_labels()
            } else {
                task.grade_labels.clone()
            };
            match load_grader_with_prompt(&dir, &labels, self.placement, max_len, prompt) {
                Ok(g) => {
                    tracing::info!(model = %g.describe(), "model loaded");
                    // Keep at most two models resident: the pinned student and one other.
                    if self.graders.len() >= 2 {
                        self.graders.clear();
                    }
                    self.graders.insert(key.clone(), g);
                }
                Err(e) => {
                    return Outcome::Failed {
                        reason: format!("loading model {}: {e}", dir.display()),
                        retryable: true,
                    }
                }
            }
        }
        let grader = &self.graders[&key];
        let mut encoded = Vec::with_capacity(task.pairs.len());
        for (i, p) in task.pairs.iter().enumerate() {
            let pair = match to_pair(p) {
                Ok(pair) => pair,
                Err(field) => {
                    return Outcome::Failed {
                        reason: format!("pair `{}` (#{i}): {field}", p.pair_id),
                        retryable: false,
                    }
                }
            };
            match grader.encode_pair(&pair) {
                Ok(e) => encoded.push(e),
                Err(e) => {
                    return Outcome::Failed {
                        reason: format!("pair `{}` (#{i}): {e}", p.pair_id),
                        retryable: false,
                    }
                }
            }
        }
        let opts = BatchOptions::for_placement(self.placement);
        let gradings = match grade(grader.as_ref(), &encoded, opts, &mut |_| {}) {
            Ok(g) => g,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("grading: {e}"),
                    retryable: true,
                }
            }
        };
        let model = grader.describe();
        let prompt_version = prompt.version().to_string();
        let labels = task
            .pairs
            .iter()
            .zip(gradings)
            .map(|(p, g)| Label {
                pair_id: p.pair_id.clone(),
                query_id: p.query_id.clone(),
                doc_id: doc_id(p),
                grade: g.grade as u32,
                expected_grade: g.expected,
                distribution: g.distribution,
                model: model.clone(),
                checkpoint_id: checkpoint_id.clone(),
                prompt_version: prompt_version.clone(),
            })
            .collect();
        Outcome::Done {
            labels,
            queries: Vec::new(),
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: None,
        }
    }

    /// The folder of the task's model, and the checkpoint id when it is one.
    fn model_dir(&self, task: &Task) -> Result<(PathBuf, String), String> {
        match task.model.as_ref().and_then(|m| m.source.as_ref()) {
            Some(model_ref::Source::LocalPath(p)) => {
                Ok((labelfleet_slm::resolve_model(p), String::new()))
            }
            Some(model_ref::Source::CheckpointId(id)) => {
                let dir = checkpoint_dir(&self.sources.checkpoints, id)?;
                if !dir.join("config.json").is_file() {
                    return Err(format!(
                        "checkpoint `{id}` is not on this worker yet (no {})",
                        dir.display()
                    ));
                }
                Ok((dir, id.clone()))
            }
            Some(model_ref::Source::Openai(_)) => {
                Err("an OpenAI endpoint runs on the worker's API teacher, not the engine".into())
            }
            None => Err("task names no model".into()),
        }
    }
}

/// The folder of checkpoint `id`; the id must be a plain name.
pub fn checkpoint_dir(root: &Path, id: &str) -> Result<PathBuf, String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(format!(
            "checkpoint id `{id}`: only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    Ok(root.join(id))
}

pub(crate) fn doc_id(p: &labelfleet_proto::v1::PairInput) -> String {
    match &p.document {
        Some(pair_input::Document::DocId(id)) => id.clone(),
        Some(pair_input::Document::Inline(d)) => d.id.clone(),
        None => String::new(),
    }
}

/// The generator's view of a seed document.
pub(crate) fn to_seed(d: &labelfleet_proto::v1::Document) -> SeedDocument {
    let mut metadata = BTreeMap::new();
    if !d.author.is_empty() {
        metadata.insert("author".to_string(), d.author.clone());
    }
    if !d.path.is_empty() {
        metadata.insert("path".to_string(), d.path.clone());
    }
    for (k, v) in &d.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    SeedDocument {
        id: d.id.clone(),
        title: (!d.title.is_empty()).then(|| d.title.clone()),
        body: d.body.clone(),
        metadata,
    }
}

/// The engine's view of a pair; the error names the field.
pub(crate) fn to_pair(p: &labelfleet_proto::v1::PairInput) -> Result<Pair, String> {
    let Some(pair_input::Document::Inline(d)) = &p.document else {
        return Err("document: not inlined by the coordinator".into());
    };
    let mut metadata = BTreeMap::new();
    if !d.author.is_empty() {
        metadata.insert("author".to_string(), d.author.clone());
    }
    if !d.path.is_empty() {
        metadata.insert("path".to_string(), d.path.clone());
    }
    if !d.modified.is_empty() {
        metadata.insert("modified".to_string(), d.modified.clone());
    }
    for (k, v) in &d.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    Ok(Pair {
        id: p.pair_id.clone(),
        query: p.query.clone(),
        title: (!d.title.is_empty()).then(|| d.title.clone()),
        body: d.body.clone(),
        metadata,
    })
}
