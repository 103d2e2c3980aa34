//! `labelfleet run`: the method end to end (`labelfleet-pipeline`), on the embedded cluster
//! (the default for a laptop: coordinator, one worker and the trainer in this process, over
//! loopback gRPC) or, with `--coordinator`, on a running cluster. Either way the pipeline talks
//! to the cluster through the cluster client and its object store only: one code path.
//!
//! corpus -> seed documents -> synthetic queries (SmolLM2) -> BM25 hard negatives (tantivy)
//! -> teacher grades (SmolLM2, local) -> distilled student (MiniLM cross-encoder)
//! -> agreement of BM25, teacher and student with human judgments on an evaluation pool.

use crate::api_args::ApiArgs;
use crate::embedded::{EmbeddedCluster, EmbeddedOptions};
use crate::EngineArgs;
use anyhow::{Context, Result};
use clap::Args;
use labelfleet_corpus::bm25::RankSampling;
use labelfleet_pipeline::{Cluster, ClusterAddress, Config};
use labelfleet_slm::grading::{GradePrompt, GRADE_PROMPT_VERSION};
use std::path::PathBuf;

/// The engine's view of a corpus document paired with a query (`labelfleet label` uses it too).
pub use labelfleet_pipeline::stages::pair_for;

#[derive(Args)]
pub struct RunArgs {
    /// Corpus: a JSONL file or a folder of .txt/.md files.
    #[arg(long)]
    corpus: PathBuf,
    /// Where every stage writes its outputs.
    #[arg(long, default_value = "out/run")]
    out: PathBuf,
    /// Teacher model (local decoder; also writes the queries).
    #[arg(long, default_value = "smollm2")]
    teacher: String,
    /// Version of the teacher's grading prompt (grade-v1, grade-v2). Changing it re-grades with
    /// the teacher, and redoes only what depends on the grades.
    #[arg(long, default_value = GRADE_PROMPT_VERSION)]
    teacher_prompt: String,
    /// Student model to distil into (BERT-family cross-encoder).
    #[arg(long, default_value = "minilm")]
    student: String,
    /// Transformer layers the student keeps from its base model (the bottom ones; 0: all).
    /// Three of MiniLM's six halve the student's cost per label.
    #[arg(long, default_value_t = 3)]
    student_layers: usize,
    /// Longest student input in tokens (query and document; the document is cut).
    #[arg(long, default_value_t = 256)]
    student_max_len: usize,
    #[arg(long, default_value_t = 24)]
    seed_docs: usize,
    /// Topic queries sampled per seed document (duplicates and unusable ones are dropped).
    #[arg(long, default_value_t = 2)]
    queries_per_doc: usize,
    /// Metadata queries per seed document: they name its author, path, file name or source,
    /// as enterprise users search (0: none).
    #[arg(long, default_value_t = 1)]
    metadata_queries_per_doc: usize,
    /// BM25 depth hard negatives are drawn from.
    #[arg(long, default_value_t = 20)]
    bm25_depth: usize,
    /// Round-trip filter: keep a synthetic query only when BM25 ranks its seed document within
    /// this depth (0: keep every query). Drops queries that lost track of their document.
    #[arg(long, default_value_t = 20)]
    consistency_depth: usize,
    #[arg(long, default_value_t = 3)]
    negatives_per_query: usize,
    /// Which BM25 ranks negatives come from: `top` (the hardest), `uniform` within the depth,
    /// or `stratified` (one from each slice of the ranking: hard and medium both).
    #[arg(long, default_value = "stratified", value_parser = parse_rank_sampling)]
    rank_sampling: RankSampling,
    /// Share of synthetic queries held out to compare student and teacher.
    #[arg(long, default_value_t = 0.2)]
    heldout: f64,
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    #[arg(long, default_value_t = 2e-4)]
    learning_rate: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Human judgments for evaluation: queries (`qid<TAB>text`) ...
    #[arg(long)]
    eval_queries: Option<PathBuf>,
    /// ... and TREC qrels (`qid 0 docid grade`).
    #[arg(long)]
    eval_qrels: Option<PathBuf>,
    /// Evaluation queries sampled from the human set.
    #[arg(long, default_value_t = 10)]
    eval_sample: usize,
    /// Pool rule: judged documents plus the top-k BM25 documents not judged, taken as grade 0.
    #[arg(long, default_value_t = 10)]
    pool_k: usize,
    /// Price of the machine per hour (USD), for the cost per million labels (default: hours only).
    #[arg(long)]
    price_per_hour: Option<f64>,
    /// A running cluster instead of the embedded one (boxed: the command enum stays small).
    #[command(flatten)]
    remote: Box<RemoteArgs>,
    /// A teacher behind an OpenAI-compatible API (`--teacher-api-base URL --teacher-api-model
    /// NAME`) writes the queries and grades the pairs instead of the local `--teacher`.
    #[command(flatten)]
    api: Box<ApiArgs>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Where a running cluster is.
#[derive(Args)]
struct RemoteArgs {
    /// Run on a cluster instead of the embedded one: its coordinator replicas (`host:port`,
    /// comma-separated). Needs `--trainer` and `--store` (the cluster's object store).
    #[arg(long, requires_all = ["trainer", "store"])]
    coordinator: Option<String>,
    /// The cluster's trainer (`host:port`), with `--coordinator`.
    #[arg(long, requires = "coordinator")]
    trainer: Option<String>,
    /// The cluster's object store, as its roles were given it (a directory, file://, s3://,
    /// gs://, az://), with `--coordinator`: the distillation dataset goes in, the checkpoint
    /// comes out.
    #[arg(long, requires = "coordinator")]
    store: Option<String>,
}

fn parse_rank_sampling(s: &str) -> Result<RankSampling, String> {
    match s {
        "top" => Ok(RankSampling::Top),
        "uniform" => Ok(RankSampling::Uniform),
        "stratified" => Ok(RankSampling::Stratified),
        other => Err(format!("`{other}`: expected top, uniform or stratified")),
    }
}

impl RunArgs {
    fn config(&self) -> Result<Config> {
        Ok(Config {
            corpus: self.corpus.clone(),
            out: self.out.clone(),
            teacher: self.teacher.clone(),
            teacher_prompt: GradePrompt::parse(&self.teacher_prompt).context("--teacher-prompt")?,
            student: self.student.clone(),
            student_layers: self.student_layers,
            student_max_len: self.student_max_len,
            seed_docs: self.seed_docs,
            queries_per_doc: self.queries_per_doc,
            metadata_queries_per_doc: self.metadata_queries_per_doc,
            bm25_depth: self.bm25_depth,
            consistency_depth: self.consistency_depth,
            negatives_per_query: self.negatives_per_query,
            rank_sampling: self.rank_sampling,
            heldout: self.heldout,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            seed: self.seed,
            eval_queries: self.eval_queries.clone(),
            eval_qrels: self.eval_qrels.clone(),
            eval_sample: self.eval_sample,
            pool_k: self.pool_k,
            price_per_hour: self.price_per_hour,
            max_len: self.engine.max_len,
        })
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = a.config()?;
    labelfleet_pipeline::stages::check_config(&cfg)?;
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    // an API teacher answers over the network from this process, with its own response cache;
    // a local teacher runs on the cluster's workers
    let mut api_args = a.api.clone();
    if api_args.api_cache.is_none() {
        api_args.api_cache = Some(a.out.join("cache/api.jsonl"));
    }
    let api = api_args.client_with_prompt(cfg.teacher_prompt)?;
    let (address, embedded) = match (&a.remote.coordinator, &a.remote.trainer, &a.remote.store) {
        (Some(coordinators), Some(trainer), Some(store)) => (
            ClusterAddress {
                coordinators: coordinators.clone(),
                trainer: trainer.clone(),
                store: store.clone(),
            },
            None,
        ),
        _ => {
            // The embedded cluster: coordinator, one worker and the trainer, over loopback gRPC.
            let store = a.out.join("cluster").display().to_string();
            let cluster = EmbeddedCluster::start(EmbeddedOptions {
                store: store.clone(),
                listen: "127.0.0.1:0".parse()?,
                trainer_listen: "127.0.0.1:0".parse()?,
                workers: 1,
                placement: a.engine.placement()?,
                threads: a.engine.threads.unwrap_or(0).max(0) as usize,
                trainer_max_tokens: a.student_max_len,
                metrics_listen: None,
            })?;
            let address = ClusterAddress {
                coordinators: cluster.address.to_string(),
                trainer: cluster.trainer_address.to_string(),
                store,
            };
            (address, Some(cluster))
        }
    };
    let result = Cluster::connect(&address)
        .and_then(|mut cluster| labelfleet_pipeline::run(&cfg, &mut cluster, api.as_ref()));
    if let Some(cluster) = embedded {
        cluster.shutdown()?;
    }
    result?;
    if let Some(api) = &api {
        eprintln!(
            "API teacher {}:\n{}",
            api.describe(),
            crate::api_args::usage_table(&api.usage())
        );
    }
    Ok(())
}
