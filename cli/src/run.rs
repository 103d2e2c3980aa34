//! `labelfleet run`: the method end to end, as one corpus job (`JobKind::Corpus`), on the
//! embedded cluster (the default for a laptop: coordinator, one worker and the trainer in this
//! process, over loopback gRPC) or, with `--coordinator`, on a running cluster. Either way this
//! command is a client: it uploads the corpus, submits the job, follows its stages and writes
//! the job's outputs into `--out`; the coordinator's driver runs the stages
//! (`labelfleet-pipeline`). One code path.
//!
//! corpus -> seed documents -> synthetic queries (SmolLM2) -> BM25 hard negatives (tantivy)
//! -> teacher grades (SmolLM2, local) -> distilled student (MiniLM cross-encoder)
//! -> student labels of the targets, and the agreement of BM25, teacher and student with human
//! judgments on them.

use crate::api_args::ApiArgs;
use crate::embedded::{EmbeddedCluster, EmbeddedOptions};
use crate::EngineArgs;
use anyhow::{Context, Result};
use clap::Args;
use labelfleet_client::Client;
use labelfleet_corpus::bm25::RankSampling;
use labelfleet_pipeline::{progress, stages, Config};
use labelfleet_proto::v1 as proto;
use labelfleet_proto::v1::{
    model_ref, HumanJudgment, Job, JobKind, JobSpec, JobState, ModelRef, OpenAiEndpoint, QueryInput,
};
use labelfleet_slm::grading::{GradePrompt, GRADE_PROMPT_VERSION};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Who grades the pairs: a committee of judges, each `name` or `name=weight`,
    /// comma-separated: `similarity` (the sentence encoder's similarity, with feedback from the
    /// corpus and graded by where a pair stands among the corpus's documents) and `decoder` (the
    /// local --teacher read out with --teacher-prompt). The labels keep each judge's
    /// distribution. `teacher`: the teacher grades alone. Default: `similarity` with a local
    /// teacher (SmolLM2's own grades are at chance: BENCHMARKS.md), `teacher` with an API one.
    #[arg(long)]
    judges: Option<String>,
    /// The similarity judge's sentence encoder.
    #[arg(long, default_value = "minilm")]
    judge_encoder: String,
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
    /// Seed documents the queries are written from (96 give about 65 queries once the filters
    /// have dropped some).
    #[arg(long, default_value_t = 96)]
    seed_docs: usize,
    /// Topic queries sampled per seed document (duplicates and unusable ones are dropped).
    #[arg(long, default_value_t = 2)]
    queries_per_doc: usize,
    /// Metadata queries per seed document: they name its author, path, file name or source,
    /// as enterprise users search (0: none).
    #[arg(long, default_value_t = 1)]
    metadata_queries_per_doc: usize,
    /// BM25 depth hard negatives are drawn from.
    #[arg(long, default_value_t = 100)]
    bm25_depth: usize,
    /// Round-trip filter: keep a synthetic query only when BM25 ranks its seed document within
    /// this depth (0: keep every query). Drops queries that lost track of their document.
    #[arg(long, default_value_t = 20)]
    consistency_depth: usize,
    /// Negatives per query: with the committee teacher they are cheap to grade, and the
    /// student learns from the teacher's grades of each (soft labels), not only from positives.
    #[arg(long, default_value_t = 10)]
    negatives_per_query: usize,
    /// Which BM25 ranks negatives come from: `top` (the hardest), `uniform` within the depth,
    /// or `stratified` (one from each slice of the ranking: hard and medium both).
    #[arg(long, default_value = "stratified", value_parser = parse_rank_sampling)]
    rank_sampling: RankSampling,
    /// Share of synthetic queries held out to compare student and teacher.
    #[arg(long, default_value_t = 0.2)]
    heldout: f64,
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Small enough to keep the pre-trained encoder's features: at 2e-4 the student's ranking
    /// fell below chance on the main job's evaluation, at 3e-5 it matched the teacher's
    /// (BENCHMARKS.md).
    #[arg(long, default_value_t = 3e-5)]
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
    /// Run the corpus job on a cluster instead of the embedded one: its coordinator replicas
    /// (`host:port`, comma-separated). The coordinators must know their trainer (`labelfleet
    /// coordinator --trainer`); the outputs come back through them.
    #[arg(long, env = "LABELFLEET_COORDINATOR")]
    coordinator: Option<String>,
    #[command(flatten)]
    security: crate::security_cmd::ClientSecurityArgs,
}

fn parse_rank_sampling(s: &str) -> Result<RankSampling, String> {
    match s {
        "top" => Ok(RankSampling::Top),
        "uniform" => Ok(RankSampling::Uniform),
        "stratified" => Ok(RankSampling::Stratified),
        other => Err(format!("`{other}`: expected top, uniform or stratified")),
    }
}

/// The model roots of the embedded cluster of a run: the bundled models, and the teacher
/// and student folders this command was given.
fn run_model_roots(cfg: &Config) -> Vec<std::path::PathBuf> {
    let mut roots = labelfleet_worker::engine::default_model_roots();
    roots.push(labelfleet_slm::resolve_model(&cfg.student));
    if cfg.teacher_api.is_none() {
        roots.push(labelfleet_slm::resolve_model(&cfg.teacher));
    }
    for j in cfg.committee.iter().flat_map(|c| &c.judges) {
        if let Some(proto::judge::Kind::Similarity(s)) = &j.kind {
            roots.push(labelfleet_slm::resolve_model(&s.encoder));
        }
    }
    roots
}

/// The committee `--judges` names (None: the teacher grades alone). Its similarity judges read
/// the corpus uploaded as `corpus_id`.
fn committee(
    judges: Option<&str>,
    encoder: &str,
    cfg: &Config,
    corpus_id: &str,
) -> Result<Option<proto::Committee>> {
    let judges = match judges {
        Some(j) => j.trim(),
        None if cfg.teacher_api.is_some() => "teacher",
        None => "similarity",
    };
    if judges == "teacher" {
        return Ok(None);
    }
    let mut committee = proto::Committee::default();
    for item in judges.split(',').map(str::trim) {
        let (name, weight) = match item.split_once('=') {
            Some((n, w)) => (
                n.trim(),
                w.trim()
                    .parse::<f64>()
                    .with_context(|| format!("--judges: `{item}`: the weight is not a number"))?,
            ),
            None => (item, 1.0),
        };
        let kind = match name {
            "similarity" => {
                let feedback = labelfleet_slm::similarity::Feedback::default();
                proto::judge::Kind::Similarity(proto::SimilarityJudge {
                    encoder: encoder.to_string(),
                    corpus_id: corpus_id.to_string(),
                    feedback_depth: feedback.depth as u32,
                    feedback_weight: feedback.weight,
                })
            }
            "decoder" if cfg.teacher_api.is_some() => anyhow::bail!(
                "--judges: `decoder` is the local --teacher, and this run's teacher is an API"
            ),
            "decoder" => proto::judge::Kind::LocalPath(cfg.teacher.clone()),
            other => anyhow::bail!(
                "--judges: `{other}`: expected similarity, decoder (each with an optional \
                 =weight), or teacher alone"
            ),
        };
        committee.judges.push(proto::Judge {
            name: name.to_string(),
            weight,
            kind: Some(kind),
        });
    }
    // the corpus id is known once uploaded; a placeholder passes the same checks
    let at = if corpus_id.is_empty() { "-" } else { corpus_id };
    let mut checked = committee.clone();
    for j in &mut checked.judges {
        if let Some(proto::judge::Kind::Similarity(s)) = &mut j.kind {
            s.corpus_id = at.to_string();
        }
    }
    labelfleet_cluster::committee::check("--judges", &checked).map_err(anyhow::Error::msg)?;
    Ok(Some(committee))
}

impl RunArgs {
    /// The method's settings. The committee's similarity judges are given the corpus id in
    /// [`RunArgs::spec`], once the corpus is uploaded.
    fn config(&self) -> Result<Config> {
        let mut cfg = Config {
            corpus: self.corpus.clone(),
            // known once the corpus is uploaded; the spec carries it
            corpus_id: String::new(),
            out: self.out.clone(),
            cache: None,
            teacher: self.teacher.clone(),
            teacher_api: self.teacher_endpoint(),
            teacher_prompt: GradePrompt::parse(&self.teacher_prompt).context("--teacher-prompt")?,
            committee: None,
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
        };
        cfg.committee = committee(self.judges.as_deref(), &self.judge_encoder, &cfg, "")?;
        Ok(cfg)
    }
}

impl RunArgs {
    /// The API teacher the flags name, if any: the workers call it, sharing the job-wide
    /// `--teacher-api-rpm` and `--teacher-api-tpm` among them.
    fn teacher_endpoint(&self) -> Option<OpenAiEndpoint> {
        let base = self.api.api_base.as_ref()?;
        Some(OpenAiEndpoint {
            base_url: base.clone(),
            model: self.api.api_model.clone().unwrap_or_default(),
            api_key_env: self.api.api_key_env.clone(),
            requests_per_second: self.api.api_rpm.map_or(0.0, |rpm| rpm / 60.0),
            tokens_per_minute: self.api.api_tpm.unwrap_or(0.0),
            usd_per_million_input_tokens: self.api.price_input_per_mtok,
            usd_per_million_output_tokens: self.api.price_output_per_mtok,
        })
    }

    /// The corpus job: the method's settings, the targets and the human judgments (read here,
    /// sent with the spec: they are used for the report only, never for training).
    fn spec(&self, cfg: &Config, corpus_id: String) -> Result<JobSpec> {
        let (label_queries, human_judgments) = targets(cfg)?;
        let teacher = match &cfg.teacher_api {
            Some(endpoint) => model_ref::Source::Openai(endpoint.clone()),
            None => model_ref::Source::LocalPath(cfg.teacher.clone()),
        };
        let rank_sampling = match cfg.rank_sampling {
            RankSampling::Top => proto::RankSampling::Top,
            RankSampling::Uniform => proto::RankSampling::Uniform,
            RankSampling::Stratified => proto::RankSampling::Stratified,
        };
        Ok(JobSpec {
            kind: JobKind::Corpus as i32,
            name: format!("run {}", cfg.corpus.display()),
            corpus_id: corpus_id.clone(),
            seed_documents: cfg.seed_docs as u32,
            queries_per_document: cfg.queries_per_doc as u32,
            metadata_queries_per_document: cfg.metadata_queries_per_doc as u32,
            bm25_depth: cfg.bm25_depth as u32,
            consistency_depth: cfg.consistency_depth as u32,
            negatives_per_query: cfg.negatives_per_query as u32,
            rank_sampling: rank_sampling as i32,
            teacher: Some(ModelRef {
                source: Some(teacher),
            }),
            grade_prompt_version: cfg.teacher_prompt.version().to_string(),
            student: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath(cfg.student.clone())),
            }),
            student_layers: cfg.student_layers as u32,
            student_max_tokens: cfg.student_max_len as u32,
            epochs: cfg.epochs as u32,
            learning_rate: cfg.learning_rate,
            heldout_fraction: cfg.heldout,
            seed: cfg.seed,
            max_tokens: cfg.max_len as u32,
            label_queries,
            label_queries_sample: cfg.eval_sample as u32,
            label_candidates_per_query: cfg.pool_k as u32,
            human_judgments,
            committee: committee(self.judges.as_deref(), &self.judge_encoder, cfg, &corpus_id)?,
            ..Default::default()
        })
    }
}

/// The target queries (`--eval-queries`) and their judgments (`--eval-qrels`, only those of
/// queries in the file).
fn targets(cfg: &Config) -> Result<(Vec<QueryInput>, Vec<HumanJudgment>)> {
    let Some(path) = &cfg.eval_queries else {
        return Ok((vec![], vec![]));
    };
    let texts = stages::read_queries(path)?;
    let judgments = match &cfg.eval_qrels {
        Some(qrels) => stages::read_qrels(qrels)?
            .into_iter()
            .filter(|(q, _)| texts.contains_key(q))
            .flat_map(|(q, docs)| {
                docs.into_iter().map(move |(d, g)| HumanJudgment {
                    query_id: q.clone(),
                    doc_id: d,
                    grade: g as u32,
                })
            })
            .collect(),
        None => vec![],
    };
    let queries = texts
        .into_iter()
        .map(|(query_id, text)| QueryInput { query_id, text })
        .collect();
    Ok((queries, judgments))
}

/// How long to wait for a leading coordinator.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = a.config()?;
    labelfleet_pipeline::stages::check_config(&cfg)?;
    if let Some(api) = a.api.config()? {
        // the embedded worker is this process: a missing key is known now, not at the first task
        if a.remote.coordinator.is_none() && !api.api_key_env.is_empty() && api.api_key().is_none()
        {
            anyhow::bail!(
                "--teacher-api-key-env: `{}` is not set, and the worker reads the API key from it \
                 (pass --teacher-api-key-env '' for a server that takes no key)",
                api.api_key_env
            );
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let (coordinators, embedded) = match &a.remote.coordinator {
        Some(list) => (list.clone(), None),
        None => {
            // The embedded cluster: coordinator, one worker and the trainer, over loopback gRPC.
            let store = a.out.join("cluster").display().to_string();
            let cluster = EmbeddedCluster::start(EmbeddedOptions {
                store,
                listen: "127.0.0.1:0".parse()?,
                trainer_listen: "127.0.0.1:0".parse()?,
                workers: 1,
                placement: a.engine.placement()?,
                threads: a.engine.threads.unwrap_or(0).max(0) as usize,
                trainer_max_tokens: a.student_max_len,
                metrics_listen: None,
                model_roots: run_model_roots(&cfg),
            })?;
            (cluster.address.to_string(), Some(cluster))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = rt.block_on(run_corpus_job(&a, &cfg, &coordinators));
    if let Some(cluster) = embedded {
        cluster.shutdown()?;
    }
    let report = result?;
    if a.remote.coordinator.is_some() {
        // the embedded cluster's driver printed these in this process already
        if let Some(tables) = report["agreement_with_humans"]["tables"].as_str() {
            print!("{tables}");
        }
        for w in report["model_work"].as_array().into_iter().flatten() {
            eprintln!("model work: {}", w.as_str().unwrap_or_default());
        }
    }
    eprintln!("outputs in {}", a.out.display());
    Ok(())
}

/// Uploads the corpus, submits the corpus job, follows it stage by stage, and writes its
/// outputs into `--out`; returns the job's `report.json`.
async fn run_corpus_job(
    a: &RunArgs,
    cfg: &Config,
    coordinators: &str,
) -> Result<serde_json::Value> {
    let credentials = match a.remote.coordinator {
        Some(_) => a.remote.security.credentials()?,
        // the embedded cluster: plaintext on loopback
        None => labelfleet_client::Credentials::default(),
    };
    let mut client = Client::connect_with(
        labelfleet_client::endpoints(coordinators),
        CONNECT_WAIT,
        credentials,
    )
    .await
    .context("connecting to the coordinator")?;
    let corpus_id = crate::jobs_cmd::upload_corpus(&mut client, &cfg.corpus).await?;
    let spec = a.spec(cfg, corpus_id)?;
    // one key per invocation: a submit retried after a leader change gets the same job
    let key = format!("run-{:032x}", rand::random::<u128>());
    let job = client
        .submit(spec, &key)
        .await
        .context("submitting the corpus job")?;
    eprintln!("corpus job {}", job.job_id);
    let job = follow(&mut client, &job.job_id).await?;
    if job.state != JobState::Succeeded as i32 {
        return Err(crate::JobNotSucceeded {
            job_id: job.job_id.clone(),
            state: JobState::try_from(job.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_default(),
            error: format!("in stage `{}`: {}", job.stage, job.error),
        }
        .into());
    }
    let student = a.out.join("student");
    if student.exists() {
        std::fs::remove_dir_all(&student).with_context(|| student.display().to_string())?;
    }
    for name in &job.artifacts {
        let data = client.fetch_artifact(&job.job_id, name).await?;
        let path = a.out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data).with_context(|| path.display().to_string())?;
    }
    let report = std::fs::read_to_string(a.out.join("report.json")).context("report.json")?;
    Ok(serde_json::from_str(&report)?)
}

/// Follows a corpus job with one progress bar per stage, until it ends.
async fn follow(client: &mut Client, job_id: &str) -> Result<Job> {
    let mut bars: Vec<(String, crate::progress::Progress)> = vec![];
    let job = client
        .watch(job_id, |job| {
            for (i, s) in job.stages.iter().enumerate() {
                if bars.len() <= i {
                    bars.push((s.stage.clone(), progress::bar(s.total, &s.stage)));
                }
                let (_, pb) = &bars[i];
                pb.set_length(s.total.max(1));
                pb.set_position(s.done);
            }
        })
        .await?;
    for (_, pb) in bars {
        pb.finish();
    }
    Ok(job)
}
