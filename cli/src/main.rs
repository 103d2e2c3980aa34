//! `labelfleet`: one binary for every role: `run` (the pipeline in one process); the cluster
//! roles `coordinator` and `worker`; the client `submit`, `status`, `watch`, `list`, `cancel`,
//! `fetch`; and the engine commands `score`, `generate`, `eval`, `bench`.

mod api_args;
mod bench;
mod cluster;
mod dispatch_bench;
mod embedded;
mod evaluate;
mod jobs_cmd;
mod jsonl;
mod label;
mod progress;
mod run;
mod security_cmd;
mod settings;
mod similarity_cmd;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use labelfleet_slm::generate::SamplingParams;
use labelfleet_slm::grading::{
    default_grade_labels, grade, load_grader, BatchOptions, GRADE_PROMPT_VERSION,
};
use labelfleet_slm::querygen::{synthesize, SeedDocument};
use labelfleet_slm::{DecoderLm, Pair, Placement, TextTokenizer};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "labelfleet",
    version,
    about = "Search-relevance labels at scale with distilled small language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A TOML file of flag values (`key = value` by long flag name; a `[command]` table for one
    /// command). Flags win over environment variables, and variables over the file.
    #[arg(long, global = true, env = settings::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Log lines as text (colour only on a terminal, and never with NO_COLOR set) or as one JSON
    /// object per line, for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LABELFLEET_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr in the chosen format; `RUST_LOG` overrides the default filter.
fn init_logging(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The method end to end in one process: corpus -> queries -> BM25 negatives -> teacher
    /// grades -> distilled student -> agreement with human judgments.
    Run(run::RunArgs),
    /// Agreement of a labels file with human judgments (TREC qrels).
    Eval(evaluate::EvalArgs),
    /// Grade (query, document) pairs: JSONL of {id, query, title?, body, metadata?} in, grades out.
    Score(ScoreArgs),
    /// Label queries over a corpus: BM25 top-k candidates graded by a student or teacher, out as
    /// TREC qrels and JSONL with provenance.
    Label(label::LabelArgs),
    /// Write search queries for documents: JSONL of {id, title?, body, metadata?} in, queries out.
    Generate(GenerateArgs),
    /// Engine throughput against the FLOP limit of this machine.
    Bench(bench::BenchArgs),
    /// Export a student checkpoint as a one-score reranker for sentence-transformers'
    /// CrossEncoder (score: the expected grade), with its model card.
    ExportReranker(ExportRerankerArgs),
    /// Coordinator dispatch rate and scaling with simulated workers (no GPU needed).
    BenchDispatch(dispatch_bench::DispatchBenchArgs),
    /// Embedded cluster in one process (coordinator, workers, trainer; no etcd) for a laptop.
    Serve(cluster::ServeArgs),
    /// Cluster coordinator replica (leader through etcd election, or standby).
    Coordinator(cluster::CoordinatorArgs),
    /// Cluster worker: leases tasks from the leader and runs the engine.
    Worker(cluster::WorkerArgs),
    /// Cluster trainer: distills students and pushes checkpoints to every live worker.
    Trainer(cluster::TrainerArgs),
    /// Ask the trainer to distill a student from teacher labels, and push it.
    Distill(jobs_cmd::DistillArgs),
    /// Upload a corpus and submit a query-synthesis job to the cluster.
    Synthesize(jobs_cmd::SynthesizeArgs),
    /// Upload a corpus and submit a labeling job to the cluster.
    Submit(jobs_cmd::SubmitArgs),
    /// Show a job.
    Status(jobs_cmd::JobArgs),
    /// Follow a job's progress until it ends.
    Watch(jobs_cmd::JobArgs),
    /// List jobs.
    List(jobs_cmd::ListArgs),
    /// Cancel a job.
    Cancel(jobs_cmd::CancelArgs),
    /// Download a job's labels (JSONL, TREC qrels).
    Fetch(jobs_cmd::FetchArgs),
    /// Make a cluster CA and one certificate per role (for mTLS between the roles).
    Certs(security_cmd::CertsArgs),
    /// Manage the bearer tokens clients use (`tokens add`).
    #[command(subcommand)]
    Tokens(security_cmd::TokensCommand),
    /// Drain a worker (an operator certificate over TLS).
    Drain(security_cmd::DrainArgs),
}

/// Where and how a model runs.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Model folder (Hugging Face layout) or a bundled name: smollm2, minilm.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16, or int8 (CPU, cross-encoders only:
    /// int8 linear layers, fp32 activations).
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Longest prompt in tokens; longer documents are truncated (the query is kept).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Padded tokens per forward pass (default: 2048 on CPU, 65536 on GPU).
    #[arg(long)]
    token_budget: Option<usize>,
}

impl EngineArgs {
    pub fn placement(&self) -> Result<Placement> {
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
        Ok(Placement::parse(&self.device, Some(&self.dtype))?)
    }
    pub fn batch_options(&self, p: Placement) -> BatchOptions {
        let mut o = BatchOptions::for_placement(p);
        if let Some(b) = self.token_budget {
            o.token_budget = b;
        }
        o
    }
}

#[derive(Args)]
struct ExportRerankerArgs {
    /// A cross-encoder checkpoint folder (a distilled student).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The folder to write (created).
    #[arg(long, short)]
    output: PathBuf,
}

fn export_reranker(a: ExportRerankerArgs) -> Result<()> {
    let grades = labelfleet_slm::export::export_reranker(&a.checkpoint, &a.output)
        .with_context(|| format!("exporting {}", a.checkpoint.display()))?;
    eprintln!(
        "wrote {}: CrossEncoder(..., trust_remote_code=True) scores by the expected grade of the {grades}-grade head",
        a.output.display()
    );
    Ok(())
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    api: api_args::ApiArgs,
    /// Pairs JSONL (`-` for stdin).
    #[arg(long, short)]
    input: PathBuf,
    /// Grades JSONL (`-` for stdout).
    #[arg(long, short)]
    output: PathBuf,
    /// Where rejected records go, with the reason (default: only reported on stderr).
    #[arg(long)]
    rejects: Option<PathBuf>,
    #[command(flatten)]
    similarity: similarity_cmd::SimilarityArgs,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    api: api_args::ApiArgs,
    #[arg(long, short)]
    input: PathBuf,
    #[arg(long, short)]
    output: PathBuf,
    /// Queries to sample per document (duplicates are dropped).
    #[arg(long, default_value_t = 3)]
    per_doc: usize,
    /// Metadata queries (naming the author, path, file name or source) per document.
    #[arg(long, default_value_t = 1)]
    metadata_per_doc: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Documents per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_docs: usize,
}

/// The command line, with every flag's variable and the config file's values in place.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(path) = settings::config_path(&args) {
        let names = settings::with_env(Cli::command());
        if let Err(e) = settings::apply_config_file(&names, &args, &path) {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
    // built after the file's values are in the environment: clap reads a flag's variable when
    // the flag is given one
    let matches = settings::with_env(Cli::command()).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() {
    labelfleet_slm::device::configure_process();
    let cli = parse_cli();
    // `run` prints its own stages; the embedded cluster's routine logs would drown them
    let default_filter = match cli.command {
        Command::Run(_) => "warn",
        _ => "labelfleet=info,warn",
    };
    init_logging(cli.log_format, default_filter);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Score(a) => score(a),
        Command::Eval(a) => evaluate::run(a),
        Command::Generate(a) => generate(a),
        Command::Label(a) => label::run(a),
        Command::Bench(a) => bench::run(a),
        Command::ExportReranker(a) => export_reranker(a),
        Command::BenchDispatch(a) => dispatch_bench::run(a),
        Command::Serve(a) => cluster::serve(a),
        Command::Coordinator(a) => cluster::coordinator(a),
        Command::Worker(a) => cluster::worker(a),
        Command::Trainer(a) => cluster::trainer(a),
        Command::Distill(a) => jobs_cmd::distill(a),
        Command::Synthesize(a) => jobs_cmd::synthesize(a),
        Command::Submit(a) => jobs_cmd::submit(a),
        Command::Status(a) => jobs_cmd::status(a),
        Command::Watch(a) => jobs_cmd::watch(a),
        Command::List(a) => jobs_cmd::list(a),
        Command::Cancel(a) => jobs_cmd::cancel(a),
        Command::Fetch(a) => jobs_cmd::fetch(a),
        Command::Certs(a) => security_cmd::certs(a),
        Command::Tokens(c) => security_cmd::tokens(c),
        Command::Drain(a) => security_cmd::drain(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let code = if e.downcast_ref::<Rejected>().is_some() {
            3
        } else if e.downcast_ref::<JobNotSucceeded>().is_some() {
            4
        } else {
            1
        };
        std::process::exit(code);
    }
}

/// A job the command waited on ended FAILED or CANCELLED.
#[derive(Debug, thiserror::Error)]
#[error("job {job_id} ended {state}: {error}")]
pub struct JobNotSucceeded {
    pub job_id: String,
    pub state: String,
    pub error: String,
}

/// Some records were rejected (the accepted ones were written).
#[derive(Debug, thiserror::Error)]
#[error("{0} record(s) rejected; the accepted ones were written")]
pub struct Rejected(pub usize);

#[derive(serde::Serialize)]
pub(crate) struct ScoredPair<'a> {
    id: &'a str,
    grade: usize,
    expected: f32,
    distribution: &'a [f32],
    truncated: bool,
    model: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    prompt_version: &'a str,
    /// How an API grade was read: "logprobs" or "parsed" (absent for local models).
    #[serde(skip_serializing_if = "Option::is_none")]
    grade_source: Option<&'a str>,
    /// The similarity judge's cosine and its z-score among the corpus (absent for graders).
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    z: Option<f32>,
}

fn report_reject(
    rejects: &mut Option<jsonl::Writer>,
    count: &mut usize,
    message: String,
) -> Result<()> {
    *count += 1;
    if *count <= 20 {
        eprintln!("rejected: {message}");
    }
    if let Some(w) = rejects {
        w.write(&serde_json::json!({ "error": message }))?;
    }
    Ok(())
}

/// The records of a pairs file that parse and pass `check`, with what `check` made of each.
pub(crate) struct AcceptedPairs<T> {
    pub pairs: Vec<Pair>,
    /// Each pair's line in the input.
    pub lines: Vec<usize>,
    pub checked: Vec<T>,
}

impl ScoreArgs {
    pub(crate) fn rejects_writer(&self) -> Result<Option<jsonl::Writer>> {
        self.rejects
            .as_deref()
            .map(jsonl::Writer::create)
            .transpose()
            .map_err(Into::into)
    }

    /// Reads `--input`: a malformed line, or a pair `check` refuses, is rejected by file and
    /// line; the rest are kept in input order.
    pub(crate) fn read_pairs<T, E: std::fmt::Display>(
        &self,
        rejects: &mut Option<jsonl::Writer>,
        rejected: &mut usize,
        check: impl Fn(&Pair) -> std::result::Result<T, E>,
    ) -> Result<AcceptedPairs<T>> {
        let mut accepted = AcceptedPairs {
            pairs: vec![],
            lines: vec![],
            checked: vec![],
        };
        for r in jsonl::read::<Pair>(&self.input)? {
            match r {
                Err(e) => report_reject(rejects, rejected, e.to_string())?,
                Ok(line) => match check(&line.value) {
                    Ok(c) => {
                        accepted.pairs.push(line.value);
                        accepted.lines.push(line.line);
                        accepted.checked.push(c);
                    }
                    Err(e) => report_reject(
                        rejects,
                        rejected,
                        format!("{}:{}: {e}", self.input.display(), line.line),
                    )?,
                },
            }
        }
        Ok(accepted)
    }
}

fn score(a: ScoreArgs) -> Result<()> {
    if let Some(client) = a.api.client()? {
        return score_api(&a, client);
    }
    if a.similarity.corpus.is_some() {
        return similarity_cmd::score(&a);
    }
    let placement = a.engine.placement()?;
    let dir = labelfleet_slm::resolve_model(&a.engine.model);
    let loading = std::time::Instant::now();
    let grader = load_grader(&dir, &default_grade_labels(), placement, a.engine.max_len)
        .with_context(|| format!("loading model {}", dir.display()))?;
    tracing::info!(
        model = %grader.describe(),
        seconds = loading.elapsed().as_secs_f64(),
        "model loaded"
    );
    let mut rejects = a.rejects_writer()?;
    let mut rejected = 0;
    let accepted = a.read_pairs(&mut rejects, &mut rejected, |p| grader.encode_pair(p))?;
    let (pairs, encoded) = (accepted.pairs, accepted.checked);
    let pb = progress::bar(encoded.len() as u64, "grading");
    let start = std::time::Instant::now();
    let grades = grade(
        grader.as_ref(),
        &encoded,
        a.engine.batch_options(placement),
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish();
    let secs = start.elapsed().as_secs_f64();
    let mut out = jsonl::Writer::create(&a.output)?;
    let model = grader.describe();
    for ((p, e), g) in pairs.iter().zip(&encoded).zip(&grades) {
        out.write(&ScoredPair {
            id: &p.id,
            grade: g.grade,
            expected: g.expected,
            distribution: &g.distribution,
            truncated: e.truncated,
            model: &model,
            prompt_version: GRADE_PROMPT_VERSION,
            grade_source: None,
            similarity: None,
            z: None,
        })?;
    }
    finish_scoring(
        out,
        rejects,
        &ScoringSummary {
            model: &model,
            placement,
            graded: grades.iter().map(|g| g.grade).collect(),
            num_grades: grader.num_grades(),
            rejected,
            seconds: secs,
        },
    )
}

/// What a local scoring run did.
pub(crate) struct ScoringSummary<'a> {
    pub model: &'a str,
    pub placement: Placement,
    /// Each written pair's grade.
    pub graded: Vec<usize>,
    pub num_grades: usize,
    pub rejected: usize,
    pub seconds: f64,
}

/// Closes a scoring run's outputs and prints its summary; fails when records were rejected
/// (the accepted ones are written).
pub(crate) fn finish_scoring(
    out: jsonl::Writer,
    rejects: Option<jsonl::Writer>,
    s: &ScoringSummary,
) -> Result<()> {
    out.finish()?;
    if let Some(w) = rejects {
        w.finish()?;
    }
    eprintln!(
        "{}",
        progress::grading_summary(
            s.model,
            &[("device", s.placement.describe())],
            &s.graded,
            s.num_grades,
            s.rejected,
            s.seconds,
        )
    );
    if s.rejected > 0 {
        return Err(Rejected(s.rejected).into());
    }
    Ok(())
}

impl GenerateArgs {
    /// The input documents; malformed lines are reported as rejects.
    fn read_documents(
        &self,
        rejects: &mut Option<jsonl::Writer>,
        rejected: &mut usize,
    ) -> Result<Vec<SeedDocument>> {
        let mut docs = vec![];
        for r in jsonl::read::<SeedDocument>(&self.input)? {
            match r {
                Ok(l) => docs.push(l.value),
                Err(e) => report_reject(rejects, rejected, e.to_string())?,
            }
        }
        Ok(docs)
    }

    fn sampling(&self) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    if let Some(client) = a.api.client()? {
        return generate_api(&a, client);
    }
    let placement = a.engine.placement()?;
    let dir = labelfleet_slm::resolve_model(&a.engine.model);
    if a.engine.max_len < a.max_new_tokens + 64 {
        anyhow::bail!(
            "--max-len {} leaves no room for a prompt and {} new tokens",
            a.engine.max_len,
            a.max_new_tokens
        );
    }
    let lm = DecoderLm::load(&dir, placement, a.engine.max_len)
        .with_context(|| format!("loading model {}", dir.display()))?;
    let tok = TextTokenizer::from_dir(&dir)?;
    let mut rejects = None;
    let mut rejected = 0;
    let docs = a.read_documents(&mut rejects, &mut rejected)?;
    let params = a.sampling();
    let max_prompt = a.engine.max_len - a.max_new_tokens;
    let pb = progress::bar(docs.len() as u64, "documents");
    let mut out = jsonl::Writer::create(&a.output)?;
    let mut written = 0;
    for chunk in docs.chunks(a.batch_docs.max(1)) {
        // one bad document must not sink its batch: validate first, then generate for the rest
        let mut good = vec![];
        for d in chunk {
            match labelfleet_slm::querygen::prompt_ids(&tok, d, max_prompt) {
                Ok(_) => good.push(d.clone()),
                Err(e) => report_reject(&mut rejects, &mut rejected, e.to_string())?,
            }
        }
        for q in synthesize(
            &lm,
            &tok,
            &good,
            a.per_doc,
            a.metadata_per_doc,
            &params,
            max_prompt,
        )? {
            out.write(&q)?;
            written += 1;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    out.finish()?;
    eprintln!(
        "{written} queries for {} documents ({rejected} rejected)",
        docs.len()
    );
    if rejected > 0 {
        return Err(Rejected(rejected).into());
    }
    Ok(())
}

fn api_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `score` through an OpenAI-compatible API: the same input, output and bad-record rules as
/// the local path; a pair the API fails on is rejected by name, the others are written.
fn score_api(a: &ScoreArgs, client: labelfleet_openai::ApiClient) -> Result<()> {
    let mut rejects = a.rejects_writer()?;
    let mut rejected = 0;
    let config = client.config();
    // bad input is named in input order, as locally; API failures come after grading
    let accepted = a.read_pairs(&mut rejects, &mut rejected, |p| {
        labelfleet_openai::grading::grade_request_messages(
            p,
            config.grade_prompt,
            config.num_grades,
            config.max_document_bytes,
        )
    })?;
    let (pairs, lines) = (accepted.pairs, accepted.lines);
    let pb = progress::bar(pairs.len() as u64, "grading");
    let start = std::time::Instant::now();
    let results = api_runtime()?.block_on(client.grade_pairs(&pairs, &|| pb.inc(1)));
    pb.finish();
    let secs = start.elapsed().as_secs_f64();
    let model = client.describe();
    let mut out = jsonl::Writer::create(&a.output)?;
    let mut graded = vec![];
    for ((p, line), r) in pairs.iter().zip(&lines).zip(results) {
        match r {
            Ok(g) => {
                out.write(&ScoredPair {
                    id: &p.id,
                    grade: g.grading.grade,
                    expected: g.grading.expected,
                    distribution: &g.grading.distribution,
                    truncated: g.truncated,
                    model: &model,
                    prompt_version: client.config().grade_prompt.version(),
                    grade_source: Some(g.source.as_str()),
                    similarity: None,
                    z: None,
                })?;
                graded.push(g.grading.grade);
            }
            Err(e) => report_reject(
                &mut rejects,
                &mut rejected,
                format!("{}:{line}: {e}", a.input.display()),
            )?,
        }
    }
    out.finish()?;
    if let Some(w) = rejects {
        w.finish()?;
    }
    eprintln!(
        "{}",
        progress::grading_summary(
            &model,
            &[],
            &graded,
            client.config().num_grades,
            rejected,
            secs
        )
    );
    eprintln!("{}", api_args::usage_table(&client.usage()));
    if rejected > 0 {
        return Err(Rejected(rejected).into());
    }
    Ok(())
}

/// `generate` through an OpenAI-compatible API: one request per query (topic and metadata
/// queries, as locally) with a seed derived from (document, index, --seed); a document the API
/// fails on is rejected by name.
fn generate_api(a: &GenerateArgs, client: labelfleet_openai::ApiClient) -> Result<()> {
    let mut rejects = None;
    let mut rejected = 0;
    let docs = a.read_documents(&mut rejects, &mut rejected)?;
    let params = a.sampling();
    let requests: usize = docs
        .iter()
        .map(|d| labelfleet_slm::querygen::sample_intents(d, a.per_doc, a.metadata_per_doc).len())
        .sum();
    let pb = progress::bar(requests as u64, "queries");
    let results = api_runtime()?.block_on(client.synthesize(
        &docs,
        a.per_doc,
        a.metadata_per_doc,
        &params,
        &|| pb.inc(1),
    ));
    pb.finish();
    let mut out = jsonl::Writer::create(&a.output)?;
    let mut written = 0;
    for r in results {
        match r {
            Ok(queries) => {
                for q in &queries {
                    out.write(q)?;
                }
                written += queries.len();
            }
            Err(e) => report_reject(&mut rejects, &mut rejected, e.to_string())?,
        }
    }
    out.finish()?;
    eprintln!(
        "{written} queries for {} documents ({rejected} rejected) from {}",
        docs.len(),
        client.describe()
    );
    eprintln!("{}", api_args::usage_table(&client.usage()));
    if rejected > 0 {
        return Err(Rejected(rejected).into());
    }
    Ok(())
}
