//! labelfleet's method as a list of stages, run against a cluster:
//!
//! corpus -> seed documents -> synthetic queries (teacher LM, a synthesis job) -> query filters
//! (clean, BM25 round trip) and BM25 hard negatives -> teacher grades (a labeling job) ->
//! distillation dataset in the cluster's store -> distilled student (a trainer run) -> student
//! grades of the evaluation pool (a labeling job pinned to the pushed checkpoint) -> agreement
//! of BM25, teacher and student with human judgments.
//!
//! The pipeline talks to the cluster only through `labelfleet-client` (coordinator and trainer)
//! and the cluster's object store (`Blobs`), so the same code runs on the embedded cluster of
//! `labelfleet run` and on a real one (`labelfleet run --coordinator`). A content-keyed cache
//! under the output folder sits in front of every job, so a re-run submits nothing that was
//! already done. Human judgments are read only by the evaluation stage: nothing trains on them.
//! No libtorch.

pub mod cluster;
pub mod progress;
pub mod report;
pub mod stages;

pub use cluster::{ApiSpend, Cluster, ClusterAddress, Observer};
pub use labelfleet_client::Credentials;
pub use stages::Context;

use labelfleet_corpus::bm25::RankSampling;
use labelfleet_types::GradePrompt;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

/// Why the pipeline stopped.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The inputs or a stage's output cannot carry the method further (too few queries, ...).
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Corpus(#[from] labelfleet_corpus::CorpusError),
    #[error("cache: {0}")]
    Cache(#[from] labelfleet_cache::CacheError),
    #[error(transparent)]
    Cluster(#[from] labelfleet_client::ClientError),
    #[error("object store: {0}")]
    Store(#[from] labelfleet_cluster::ClusterError),
    #[error("{what}: {message}")]
    Job { what: String, message: String },
    /// The observer stopped the run (its job was cancelled, or its driver lost leadership).
    #[error("stopped: {0}")]
    Stopped(String),
    #[error(transparent)]
    Eval(#[from] labelfleet_eval::EvalError),
    #[error("figure: {0}")]
    Plot(#[from] labelfleet_eval::plot::PlotError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl PipelineError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    pub(crate) fn job(what: &str, message: String) -> Self {
        PipelineError::Job {
            what: what.to_string(),
            message,
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Everything the method is configured by (the `labelfleet run` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Corpus: a JSONL file or a folder of .txt/.md files ...
    pub corpus: PathBuf,
    /// ... uploaded to the cluster as this corpus id (its workers search it with BM25).
    pub corpus_id: String,
    /// Where every stage writes its outputs.
    pub out: PathBuf,
    /// The content-keyed caches (grades, queries, rates, students); None: `out/cache`.
    pub cache: Option<PathBuf>,
    /// Teacher model, a local decoder (name or folder); also writes the queries.
    pub teacher: String,
    /// A teacher behind an OpenAI-compatible endpoint instead (grades and queries): the
    /// workers call it, each with its share of the endpoint's job-wide rate limits.
    pub teacher_api: Option<labelfleet_proto::v1::OpenAiEndpoint>,
    pub teacher_prompt: GradePrompt,
    /// Judges that grade in the teacher's place (the candidates, and the teacher's column of
    /// the report); the teacher then only writes the queries. None: the teacher grades.
    pub committee: Option<labelfleet_proto::v1::Committee>,
    /// Student model to distil into (BERT-family cross-encoder).
    pub student: String,
    pub student_layers: usize,
    pub student_max_len: usize,
    pub seed_docs: usize,
    pub queries_per_doc: usize,
    pub metadata_queries_per_doc: usize,
    pub bm25_depth: usize,
    pub consistency_depth: usize,
    pub negatives_per_query: usize,
    pub rank_sampling: RankSampling,
    pub heldout: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Queries whose BM25 top `pool_k` documents the student labels (`qid<TAB>text`) ...
    pub eval_queries: Option<PathBuf>,
    /// ... and, optionally, human judgments of them: the agreement report.
    pub eval_qrels: Option<PathBuf>,
    pub eval_sample: usize,
    pub pool_k: usize,
    pub price_per_hour: Option<f64>,
    /// Longest teacher prompt in tokens.
    pub max_len: usize,
}

/// Runs the method end to end on `cluster`, writing
/// `queries.jsonl`, `teacher_labels.jsonl`, `student/`, the evaluation labels, `agreement.png`
/// and `report.json` under `cfg.out`.
pub fn run(cfg: &Config, cluster: &mut Cluster) -> Result<()> {
    let started = Instant::now();
    stages::check_config(cfg)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| PipelineError::io(&cfg.out, e))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let cache = cfg.cache.clone().unwrap_or_else(|| cfg.out.join("cache"));
    let mut ctx = Context::open(cluster, &cfg.out, &cache)?;

    ctx.cluster.stage("corpus")?;
    let corpus = stages::load_corpus(&cfg.corpus, &cfg.corpus_id)?;
    let teacher = stages::Teacher::resolve(cfg, &corpus)?;
    let seeds = stages::sample_seeds(&corpus.docs, cfg.seed_docs, &mut rng);
    ctx.cluster.stage("queries")?;
    let queries = stages::synthesize_queries(&mut ctx, cfg, &teacher, &seeds)?;
    ctx.cluster.stage("negatives")?;
    let cand = stages::candidates(&mut ctx, cfg, &corpus, &queries, &mut rng)?;
    ctx.cluster.stage("teacher")?;
    let graded = stages::teacher_grades(&mut ctx, cfg, &teacher, &cand)?;
    ctx.cluster.stage("distill")?;
    let student = stages::distill(&mut ctx, cfg, &teacher, &cand, &graded.grades)?;
    let rows = match &cfg.eval_queries {
        Some(q) => {
            let pool =
                stages::evaluation_pool(&mut ctx, cfg, &corpus, q, cfg.eval_qrels.as_deref())?;
            stages::evaluate(&mut ctx, cfg, &teacher, &student, &pool)?
        }
        None => {
            eprintln!(
                "[6/6] no --eval-queries: no targets labeled, agreement with humans not measured"
            );
            vec![]
        }
    };
    ctx.cluster.stage("report")?;
    let counts = stages::Counts {
        documents: corpus.docs.len(),
        queries: queries.len(),
        candidates: cand.keyed.len(),
        dropped: cand.dropped,
    };
    stages::write_report(
        &ctx, cfg, &counts, &teacher, &graded, &student, &rows, started,
    )
}
