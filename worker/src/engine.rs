//! The engine host: one OS thread that owns the loaded models (libtorch tensors are not
//! shared across threads) and grades tasks one after another. Models are loaded on first use
//! and kept; a pushed checkpoint is picked up by the next task that names it, so a swap never
//! happens in the middle of a task.

use labelfleet_proto::v1::{model_ref, pair_input, Label, Task};
use labelfleet_slm::grading::{
    default_grade_labels, grade, load_grader, BatchOptions, Grader, Pair, GRADE_PROMPT_VERSION,
};
use labelfleet_slm::Placement;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Default input length when a task does not set one.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// What grading a task came to.
#[derive(Debug)]
pub enum Outcome {
    Labels {
        labels: Vec<Label>,
        seconds: f64,
    },
    /// `retryable` false: the input itself is bad, another attempt would fail the same way.
    Failed {
        reason: String,
        retryable: bool,
    },
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
                };
                while let Some(req) = rx.blocking_recv() {
                    let n = req.task.pairs.len() as u64;
                    let outcome = host.run(&req.task);
                    if matches!(outcome, Outcome::Labels { .. }) {
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
    graders: HashMap<(PathBuf, usize), Box<dyn Grader>>,
}

impl Host {
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
        let key = (dir.clone(), max_len);
        if !self.graders.contains_key(&key) {
            let labels = if task.grade_labels.is_empty() {
                default_grade_labels()
            } else {
                task.grade_labels.clone()
            };
            match load_grader(&dir, &labels, self.placement, max_len) {
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
        let prompt_version = if task.prompt_version.is_empty() {
            GRADE_PROMPT_VERSION.to_string()
        } else {
            task.prompt_version.clone()
        };
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
        Outcome::Labels {
            labels,
            seconds: start.elapsed().as_secs_f64(),
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
                Err("an OpenAI endpoint is a teacher backend, not a worker model".into())
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

fn doc_id(p: &labelfleet_proto::v1::PairInput) -> String {
    match &p.document {
        Some(pair_input::Document::DocId(id)) => id.clone(),
        Some(pair_input::Document::Inline(d)) => d.id.clone(),
        None => String::new(),
    }
}

/// The engine's view of a pair; the error names the field.
fn to_pair(p: &labelfleet_proto::v1::PairInput) -> Result<Pair, String> {
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
