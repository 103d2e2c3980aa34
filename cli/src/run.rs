//! `labelfleet run`: the method end to end on the embedded cluster (the default for a laptop).
//!
//! corpus -> seed documents -> synthetic queries (SmolLM2) -> BM25 hard negatives (tantivy)
//! -> teacher grades (SmolLM2, local) -> distilled student (MiniLM cross-encoder)
//! -> agreement of BM25, teacher and student with human judgments on an evaluation pool.
//!
//! Model work runs on the same coordinator, worker and trainer as a cluster, started in this
//! process (`embedded`): query synthesis and grading are jobs the coordinator splits into tasks
//! for the worker, and distillation is a trainer run whose checkpoint is pushed to the worker
//! and pinned by the student's grading job. A content-keyed cache sits in front of every stage,
//! so a re-run submits nothing that was already done.
//!
//! Human judgments are read only by the evaluation stage: nothing trains on them.

use crate::embedded::{EmbeddedCluster, EmbeddedOptions};
use crate::api_args::ApiArgs;
use crate::{jsonl, progress, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_cache::{self as cache, Cache};
use labelfleet_corpus::bm25::{hard_negatives, RankSampling};
use labelfleet_corpus::{ingest_dir, ingest_jsonl, Bm25Index, Document, IngestLimits};
use crate::report::Row;
use labelfleet_eval::Judgment;
use labelfleet_proto::v1::{model_ref, DistillRequest, ModelRef};
use labelfleet_slm::grading::{GradePrompt, GRADE_PROMPT_VERSION};
use labelfleet_slm::generate::SamplingParams;
use labelfleet_slm::querygen::{
    GeneratedQuery, SeedDocument, METADATA_QUERY_PROMPT_VERSION, QUERY_PROMPT_VERSION,
};
use labelfleet_slm::{Grading, Pair};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// A teacher behind an OpenAI-compatible API (`--teacher-api-base URL --teacher-api-model
    /// NAME`) writes the queries and grades the pairs instead of the local `--teacher`.
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_rank_sampling(s: &str) -> Result<RankSampling, String> {
    match s {
        "top" => Ok(RankSampling::Top),
        "uniform" => Ok(RankSampling::Uniform),
        "stratified" => Ok(RankSampling::Stratified),
        other => Err(format!(
            "`{other}`: expected top, uniform or stratified"
        )),
    }
}

/// The engine's view of a corpus document paired with a query.
pub fn pair_for(id: String, query: &str, d: &Document) -> Pair {
    let mut metadata = BTreeMap::new();
    if let Some(a) = &d.author {
        metadata.insert("author".to_string(), a.clone());
    }
    if let Some(p) = &d.path {
        metadata.insert("path".to_string(), p.clone());
    }
    for (k, v) in &d.metadata {
        if let Some(s) = v.as_str() {
            metadata.insert(k.clone(), s.to_string());
        }
    }
    Pair {
        id,
        query: query.to_string(),
        title: d.title.clone(),
        body: d.body.clone(),
        metadata,
    }
}

/// Salt of the evaluation pool's sampling seed.
const EVAL_POOL_SALT: u64 = 0x6576_616c_706f_6f6c;
/// Pairs per task of the embedded grading jobs.
const TASK_SIZE: u32 = 64;
/// Pairs per optimizer step of the student's distillation.
const STUDENT_BATCH: u32 = 16;

/// Model work done by one grading call: how many pairs were graded, how many came from the cache.
struct Graded {
    grades: Vec<Grading>,
    computed: usize,
    /// pairs/s over the computed pairs (None when all came from the cache).
    rate: Option<f64>,
}

fn pair_key(model: &str, p: &Pair) -> String {
    let meta = serde_json::to_string(&p.metadata).unwrap_or_default();
    cache::key(&[
        model,
        &p.query,
        p.title.as_deref().unwrap_or(""),
        &p.body,
        &meta,
    ])
}

/// Grades pairs through `grade_fn` (a job on the embedded cluster), taking what it can from the
/// cache (keyed by `model`, the grader's fingerprint and prompt version, and the pair's
/// content). Only the pairs not in the cache are submitted.
fn grade_all(
    grade_fn: &mut dyn FnMut(&[Pair]) -> Result<Vec<Grading>>,
    model: &str,
    pairs: &[Pair],
    cache: &mut Cache<Grading>,
) -> Result<Graded> {
    let keys: Vec<String> = pairs.iter().map(|p| pair_key(model, p)).collect();
    let todo: Vec<usize> = (0..pairs.len())
        .filter(|&i| cache.get(&keys[i]).is_none())
        .collect();
    let mut rate = None;
    if !todo.is_empty() {
        let batch: Vec<Pair> = todo.iter().map(|&i| pairs[i].clone()).collect();
        let start = Instant::now();
        let grades = grade_fn(&batch)?;
        rate = Some(grades.len() as f64 / start.elapsed().as_secs_f64().max(1e-9));
        for (&i, g) in todo.iter().zip(grades) {
            cache.insert(keys[i].clone(), g)?;
        }
        cache.flush()?;
    }
    let grades = keys
        .iter()
        .map(|k| cache.get(k).cloned().expect("graded or cached"))
        .collect();
    Ok(Graded {
        grades,
        computed: todo.len(),
        rate,
    })
}

/// Where a label comes from: the labeler, its weights, and the grading prompt (for a student,
/// the prompt of the teacher it was distilled from).
struct Provenance<'a> {
    model: &'a str,
    checkpoint: &'a str,
    prompt_version: &'a str,
}

#[derive(serde::Serialize)]
struct LabelRecord<'a> {
    id: &'a str,
    query: &'a str,
    doc_id: &'a str,
    grade: usize,
    expected: f32,
    distribution: &'a [f32],
    model: &'a str,
    checkpoint: &'a str,
    prompt_version: &'a str,
}

fn write_labels(
    path: &Path,
    pairs: &[(String, String)],
    texts: &[Pair],
    grades: &[Grading],
    from: &Provenance,
) -> Result<()> {
    let mut w = jsonl::Writer::create(path).with_context(|| path.display().to_string())?;
    for (((q, d), p), g) in pairs.iter().zip(texts).zip(grades) {
        w.write(&LabelRecord {
            id: &p.id,
            query: q,
            doc_id: d,
            grade: g.grade,
            expected: g.expected,
            distribution: &g.distribution,
            model: from.model,
            checkpoint: from.checkpoint,
            prompt_version: from.prompt_version,
        })?;
    }
    w.finish()?;
    Ok(())
}

pub fn run(a: RunArgs) -> Result<()> {
    let started = Instant::now();
    if a.engine.max_len < 128 {
        bail!(
            "--max-len {} is too short for the grading and query prompts (at least 128)",
            a.engine.max_len
        );
    }
    let placement = a.engine.placement()?;
    let teacher_prompt = GradePrompt::parse(&a.teacher_prompt).context("--teacher-prompt")?;
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut work: Vec<String> = vec![];
    let mut grade_cache: Cache<Grading> = Cache::open(&a.out.join("cache/grades.jsonl"))?;
    let mut rate_cache: Cache<f64> = Cache::open(&a.out.join("cache/rates.jsonl"))?;

    // 1. corpus
    let report = if a.corpus.is_dir() {
        ingest_dir(&a.corpus, IngestLimits::default())?
    } else {
        ingest_jsonl(&a.corpus, IngestLimits::default())?
    };
    for r in report.rejected.iter().take(10) {
        eprintln!("rejected: {r}");
    }
    let docs = report.accepted;
    eprintln!(
        "[1/6] corpus: {} documents accepted, {} rejected",
        docs.len(),
        report.rejected.len()
    );
    if docs.len() < 2 {
        bail!("the corpus needs at least two documents");
    }
    let by_id: HashMap<&str, &Document> = docs.iter().map(|d| (d.id.as_str(), d)).collect();
    let t = Instant::now();
    let index = Bm25Index::build(&docs, None)?;
    eprintln!(
        "      BM25 index over title, body, author, path: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The embedded cluster: coordinator, one worker and the trainer, over loopback gRPC.
    let store = a.out.join("cluster");
    let mut cluster = EmbeddedCluster::start(EmbeddedOptions {
        store: store.display().to_string(),
        listen: "127.0.0.1:0".parse()?,
        trainer_listen: "127.0.0.1:0".parse()?,
        workers: 1,
        placement,
        threads: a.engine.threads.unwrap_or(0).max(0) as usize,
        trainer_max_tokens: a.student_max_len,
        metrics_listen: None,
    })?;

    // 2. synthetic queries from seed documents, written by the teacher LM on the worker
    let teacher_dir = labelfleet_slm::resolve_model(&a.teacher);
    // an API teacher answers over the network from this process, with its own response cache;
    // a local teacher runs on the cluster's worker
    let mut api_args = a.api.clone();
    if api_args.api_cache.is_none() {
        api_args.api_cache = Some(a.out.join("cache/api.jsonl"));
    }
    let api = api_args.client_with_prompt(teacher_prompt)?;
    let teacher_fp = match &api {
        Some(api) => cache::key(&[&api.describe()]),
        None => cache::model_fingerprint(&teacher_dir)
            .with_context(|| format!("teacher {}", teacher_dir.display()))?,
    };
    let mut seeds: Vec<&Document> = docs.iter().collect();
    seeds.shuffle(&mut rng);
    seeds.truncate(a.seed_docs);
    let mut query_cache: Cache<Vec<GeneratedQuery>> =
        Cache::open(&a.out.join("cache/queries.jsonl"))?;
    // the worker's sampling: temperature 0.8, top-p 0.95, 32 new tokens, seeded by the documents
    let sampling = format!(
        "worker-synthesis:{}:{}:{}:{}:{METADATA_QUERY_PROMPT_VERSION}",
        a.queries_per_doc, a.metadata_queries_per_doc, a.seed, a.engine.max_len
    );
    let qkey = |d: &Document| {
        cache::key(&[
            &teacher_fp,
            QUERY_PROMPT_VERSION,
            &sampling,
            &d.content_hash(),
        ])
    };
    let missing: Vec<&Document> = seeds
        .iter()
        .copied()
        .filter(|d| query_cache.get(&qkey(d)).is_none())
        .collect();
    if let (false, Some(api)) = (missing.is_empty(), &api) {
        let seeds_in: Vec<SeedDocument> = missing
            .iter()
            .map(|d| {
                let p = pair_for(d.id.clone(), "", d);
                SeedDocument {
                    id: d.id.clone(),
                    title: p.title,
                    body: p.body,
                    metadata: p.metadata,
                }
            })
            .collect();
        let params = SamplingParams {
            max_new_tokens: 32,
            temperature: 0.8,
            top_p: 0.95,
            seed: a.seed,
        };
        let pb = progress::bar(
            (seeds_in.len() * (a.queries_per_doc + a.metadata_queries_per_doc)) as u64,
            "queries (API)",
        );
        let written = cluster.block_on(api.synthesize(
            &seeds_in,
            a.queries_per_doc,
            a.metadata_queries_per_doc,
            &params,
            &|| pb.inc(1),
        ));
        pb.finish();
        for (d, result) in missing.iter().zip(written) {
            match result {
                Ok(mine) => query_cache.insert(qkey(d), mine)?,
                Err(e) => eprintln!("rejected: seed document {}: {e}", d.id),
            }
        }
        query_cache.flush()?;
    } else if !missing.is_empty() {
        let written = cluster.synthesize(
            &teacher_dir,
            missing
                .iter()
                .map(|d| crate::cluster::to_proto_document(d))
                .collect(),
            a.queries_per_doc as u32,
            a.metadata_queries_per_doc as u32,
            a.engine.max_len,
            a.seed,
        )?;
        for d in &missing {
            let mine: Vec<GeneratedQuery> = written
                .iter()
                .filter(|q| q.doc_id == d.id)
                .map(|q| GeneratedQuery {
                    doc_id: q.doc_id.clone(),
                    query: q.text.clone(),
                    prompt_version: q.prompt_version.clone(),
                    metadata_field: (!q.metadata_field.is_empty())
                        .then(|| q.metadata_field.clone()),
                })
                .collect();
            query_cache.insert(qkey(d), mine)?;
        }
        query_cache.flush()?;
    }
    let queries: Vec<GeneratedQuery> = seeds
        .iter()
        .flat_map(|d| query_cache.get(&qkey(d)).cloned().unwrap_or_default())
        .collect();
    work.push(format!(
        "query synthesis: {} documents generated, {} from cache",
        missing.len(),
        seeds.len() - missing.len()
    ));
    let mut w = jsonl::Writer::create(&a.out.join("queries.jsonl"))?;
    queries.iter().try_for_each(|q| w.write(q))?;
    w.finish()?;
    eprintln!(
        "[2/6] {} queries for {} seed documents",
        queries.len(),
        seeds.len()
    );
    if queries.len() < 5 {
        bail!(
            "only {} usable queries were written; raise --seed-docs",
            queries.len()
        );
    }

    // 3. candidates: the seed is the positive, BM25 ranks supply hard negatives
    let mut cand: Vec<(String, String)> = vec![];
    let mut inconsistent = 0usize;
    for q in &queries {
        let hits = index.search(&q.query, a.bm25_depth.max(a.consistency_depth))?;
        if a.consistency_depth > 0
            && !hits
                .iter()
                .take(a.consistency_depth)
                .any(|h| h.id == q.doc_id)
        {
            inconsistent += 1;
            continue;
        }
        let hits: Vec<_> = hits.into_iter().take(a.bm25_depth).collect();
        let positives: HashSet<&str> = [q.doc_id.as_str()].into();
        cand.push((q.query.clone(), q.doc_id.clone()));
        for h in hard_negatives(
            &hits,
            &positives,
            a.negatives_per_query,
            a.rank_sampling,
            &mut rng,
        ) {
            cand.push((q.query.clone(), h.id));
        }
    }
    let train_pairs: Vec<Pair> = cand
        .iter()
        .enumerate()
        .map(|(i, (q, d))| pair_for(format!("syn{i}"), q, by_id[d.as_str()]))
        .collect();
    eprintln!(
        "[3/6] {} candidate pairs (positive + {} BM25 negatives per query); {inconsistent} queries dropped: BM25 does not rank their seed in its top {}",
        cand.len(),
        a.negatives_per_query,
        a.consistency_depth
    );
    if cand.len() < 10 {
        bail!("only {} candidate pairs; raise --seed-docs", cand.len());
    }

    // 4. teacher grades, as a labeling job on the worker
    let teacher_model = model_ref::Source::LocalPath(teacher_dir.display().to_string());
    let teacher_name = match &api {
        Some(api) => format!("{} prompt={}", api.describe(), teacher_prompt.version()),
        None => format!(
            "decoder:{} prompt={}",
            teacher_dir.display(),
            teacher_prompt.version()
        ),
    };
    let teacher_id = format!("{teacher_fp}:{}", teacher_prompt.version());
    let max_len = a.engine.max_len;
    let teacher_job = |cluster: &mut EmbeddedCluster, pairs: &[Pair]| -> Result<Vec<Grading>> {
        let Some(api) = &api else {
            return cluster.grade(
                teacher_model.clone(),
                teacher_prompt,
                pairs,
                max_len,
                TASK_SIZE,
                "teacher",
            );
        };
        let pb = progress::bar(pairs.len() as u64, "teacher (API)");
        let results = cluster.block_on(api.grade_pairs(pairs, &|| pb.inc(1)));
        pb.finish();
        results
            .into_iter()
            .map(|r| r.map(|g| g.grading).map_err(anyhow::Error::from))
            .collect()
    };
    let graded = grade_all(
        &mut |p| teacher_job(&mut cluster, p),
        &teacher_id,
        &train_pairs,
        &mut grade_cache,
    )?;
    work.push(format!(
        "teacher grading (synthetic pairs): {} graded, {} from cache",
        graded.computed,
        train_pairs.len() - graded.computed
    ));
    let (teacher_grades, teacher_rate) = (graded.grades, graded.rate);
    write_labels(
        &a.out.join("teacher_labels.jsonl"),
        &cand,
        &train_pairs,
        &teacher_grades,
        &Provenance {
            model: &teacher_name,
            checkpoint: &teacher_fp,
            prompt_version: teacher_prompt.version(),
        },
    )?;
    let mut hist = [0usize; 4];
    teacher_grades.iter().for_each(|g| hist[g.grade] += 1);
    eprintln!(
        "[4/6] teacher grades for {} pairs: {hist:?}",
        teacher_grades.len()
    );

    // 5. distillation on the trainer, with a held-out split by query; the checkpoint is pushed
    // to the worker
    let student_dir = labelfleet_slm::resolve_model(&a.student);
    // the dataset and checkpoint are keyed by what they are made of: teacher labels, base
    // model, depth, input length and training config
    let dataset_lines: Vec<String> = train_pairs
        .iter()
        .zip(&teacher_grades)
        .map(|(p, g)| {
            let mut v = serde_json::to_value(p)?;
            v["distribution"] = serde_json::json!(g.distribution);
            Ok(v.to_string())
        })
        .collect::<Result<_>>()?;
    let dataset_key = cache::key(&dataset_lines.iter().map(String::as_str).collect::<Vec<_>>());
    let request = DistillRequest {
        job_id: "run".into(),
        base: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath(
                student_dir.display().to_string(),
            )),
        }),
        dataset: format!("datasets/teacher-{dataset_key}.jsonl"),
        epochs: a.epochs as u32,
        learning_rate: a.learning_rate,
        heldout_fraction: a.heldout,
        seed: a.seed,
        keep_layers: a.student_layers as u32,
        batch_size: STUDENT_BATCH,
    };
    let student_key = cache::key(&[
        &cache::model_fingerprint(&student_dir)?,
        &format!("{request:?}"),
        &a.student_max_len.to_string(),
    ]);
    let ckpt = a.out.join("student");
    let previous = std::fs::read_to_string(ckpt.join("labelfleet.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let (student_model, held, majority) = match previous
        .filter(|m| m["provenance"]["cache_key"] == student_key.as_str())
    {
        Some(meta) => {
            work.push(
                "distillation: reused the checkpoint (same base model, teacher labels and config)"
                    .into(),
            );
            let p = &meta["provenance"];
            let num = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
            (
                model_ref::Source::LocalPath(ckpt.display().to_string()),
                (
                    num("heldout_agreement_with_teacher"),
                    num("heldout_expected_grade_mae"),
                ),
                (num("majority_baseline"), num("majority_expected_grade_mae")),
            )
        }
        None => {
            let path = store.join(&request.dataset);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            std::fs::write(&path, dataset_lines.join("\n") + "\n")
                .with_context(|| path.display().to_string())?;
            let run = cluster.distill(request)?;
            // the user's copy of the checkpoint, with what it is made of
            let pushed = store.join("checkpoints").join(&run.checkpoint_id);
            copy_dir(&pushed, &ckpt)?;
            let meta_path = ckpt.join("labelfleet.json");
            let mut meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&meta_path)
                    .with_context(|| meta_path.display().to_string())?,
            )?;
            meta["provenance"]["cache_key"] = serde_json::json!(student_key);
            meta["provenance"]["teacher"] = serde_json::json!(teacher_name);
            meta["provenance"]["checkpoint_id"] = serde_json::json!(run.checkpoint_id);
            std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)?)
                .with_context(|| meta_path.display().to_string())?;
            work.push(format!(
                "distillation: trained checkpoint {} on the trainer",
                run.checkpoint_id
            ));
            (
                model_ref::Source::CheckpointId(run.checkpoint_id.clone()),
                (
                    run.heldout_agreement_with_teacher,
                    run.heldout_expected_grade_mae,
                ),
                (run.majority_baseline, run.majority_expected_grade_mae),
            )
        }
    };
    eprintln!(
        "[5/6] student on held-out queries, against its teacher: grade agreement {:.3} (majority class {:.3}), expected-grade error {:.3} (majority class {:.3}); checkpoint {}",
        held.0, majority.0, held.1, majority.1,
        ckpt.display()
    );
    let student_id = format!("{}:student", cache::model_fingerprint(&ckpt)?);
    let student_name = format!("cross-encoder:{}", ckpt.display());
    let student_checkpoint = match &student_model {
        model_ref::Source::CheckpointId(id) => id.clone(),
        _ => previous_checkpoint_id(&ckpt).unwrap_or_default(),
    };
    let student_max_len = a.student_max_len;
    let student_job = |cluster: &mut EmbeddedCluster, pairs: &[Pair]| {
        cluster.grade(
            student_model.clone(),
            GradePrompt::default(),
            pairs,
            student_max_len,
            TASK_SIZE,
            "student",
        )
    };

    // 6. evaluation against human judgments
    let mut rows = vec![];
    if let (Some(qpath), Some(rpath)) = (&a.eval_queries, &a.eval_qrels) {
        let texts: BTreeMap<String, String> = std::fs::read_to_string(qpath)
            .with_context(|| qpath.display().to_string())?
            .lines()
            .filter_map(|l| {
                l.split_once('\t')
                    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            })
            .collect();
        let mut qrels: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (n, line) in std::fs::read_to_string(rpath)
            .with_context(|| rpath.display().to_string())?
            .lines()
            .enumerate()
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            let [q, _, d, g] = f[..] else {
                bail!(
                    "{}:{}: expected `qid 0 docid grade`",
                    rpath.display(),
                    n + 1
                )
            };
            let g: usize = g
                .parse()
                .with_context(|| format!("{}:{}: grade `{g}`", rpath.display(), n + 1))?;
            qrels
                .entry(q.to_string())
                .or_default()
                .insert(d.to_string(), g.min(3));
        }
        let mut eval_q: Vec<&String> = qrels.keys().filter(|q| texts.contains_key(*q)).collect();
        // its own generator: the pool must not depend on how many queries the stages before
        // wrote, so every run with this seed is scored on the same pool
        eval_q.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.seed ^ EVAL_POOL_SALT));
        eval_q.truncate(a.eval_sample);
        let (mut pool, mut pool_pairs, mut bm25_score) = (vec![], vec![], vec![]);
        for q in &eval_q {
            let judged = &qrels[*q];
            let hits = index.search(&texts[*q], 1000)?;
            let score_of: HashMap<&str, f32> =
                hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
            let mut docs_q: Vec<(String, usize)> = judged
                .iter()
                .filter(|(d, _)| by_id.contains_key(d.as_str()))
                .map(|(d, g)| (d.clone(), *g))
                .collect();
            docs_q.extend(
                hits.iter()
                    .filter(|h| !judged.contains_key(&h.id))
                    .take(a.pool_k)
                    .map(|h| (h.id.clone(), 0)),
            );
            for (d, g) in docs_q {
                pool_pairs.push(pair_for(
                    format!("eval-q{q}-d{d}"),
                    &texts[*q],
                    by_id[d.as_str()],
                ));
                bm25_score.push(*score_of.get(d.as_str()).unwrap_or(&0.0) as f64);
                pool.push(((*q).clone(), d, g));
            }
        }
        eprintln!("[6/6] evaluation pool: {} queries, {} pairs (judged + top-{} BM25 unjudged as grade 0)", eval_q.len(), pool.len(), a.pool_k);
        let judgments = |pred: &dyn Fn(usize) -> (usize, f64)| -> Vec<Judgment> {
            pool.iter()
                .enumerate()
                .map(|(i, (q, d, h))| {
                    let (p, s) = pred(i);
                    Judgment {
                        query: q.clone(),
                        doc: d.clone(),
                        human: *h,
                        predicted: p,
                        score: s,
                    }
                })
                .collect()
        };
        let t = grade_all(
            &mut |p| teacher_job(&mut cluster, p),
            &teacher_id,
            &pool_pairs,
            &mut grade_cache,
        )?;
        let s = grade_all(
            &mut |p| student_job(&mut cluster, p),
            &student_id,
            &pool_pairs,
            &mut grade_cache,
        )?;
        work.push(format!(
            "evaluation pool: teacher graded {}, student graded {}, the rest from cache",
            t.computed, s.computed
        ));
        // throughput is measured when a labeler grades the pool; a re-run reports the last
        // measurement for the same model
        let t_rate = remember_rate(&mut rate_cache, &teacher_id, t.rate)?;
        let s_rate = remember_rate(&mut rate_cache, &student_id, s.rate)?;
        let (tg, sg) = (t.grades, s.grades);
        let keyed: Vec<(String, String)> = pool
            .iter()
            .map(|(q, d, _)| (q.clone(), d.clone()))
            .collect();
        write_labels(
            &a.out.join("eval_student_labels.jsonl"),
            &keyed,
            &pool_pairs,
            &sg,
            &Provenance {
                model: &student_name,
                checkpoint: &student_checkpoint,
                prompt_version: teacher_prompt.version(),
            },
        )?;
        write_qrels(&a.out.join("eval_student.qrels"), &keyed, &sg)?;
        rows.push(Row {
            name: "BM25 score".into(),
            judgments: judgments(&|i| (0, bm25_score[i])),
            pairs_per_s: None,
            graded: false,
        });
        rows.push(Row {
            name: format!("teacher ({})", a.teacher),
            judgments: judgments(&|i| (tg[i].grade, tg[i].expected as f64)),
            pairs_per_s: t_rate,
            graded: true,
        });
        rows.push(Row {
            name: format!("student ({}, distilled)", a.student),
            judgments: judgments(&|i| (sg[i].grade, sg[i].expected as f64)),
            pairs_per_s: s_rate,
            graded: true,
        });
    } else {
        eprintln!("[6/6] no --eval-queries/--eval-qrels: agreement with humans not measured");
    }
    cluster.shutdown()?;
    if let Some(api) = &api {
        eprintln!(
            "API teacher {}:\n{}",
            api.describe(),
            crate::api_args::usage_table(&api.usage())
        );
    }
    let report = crate::report::agreement_report(
        &rows,
        a.price_per_hour,
        &a.out.join("agreement.png"),
        a.seed,
    )?;
    let json = serde_json::json!({
        "corpus_documents": docs.len(), "queries": queries.len(), "candidate_pairs": cand.len(),
        "queries_dropped_by_round_trip": inconsistent,
        "teacher_prompt_version": teacher_prompt.version(),
        "api_teacher_usage": api.as_ref().map(|api| api.usage()),
        "teacher_pairs_per_s": teacher_rate,
        "student_heldout_agreement_with_teacher": held.0, "heldout_majority_baseline": majority.0,
        "student_heldout_expected_grade_mae": held.1, "heldout_majority_expected_grade_mae": majority.1,
        "model_work": work,
        "agreement_with_humans": report,
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    for w in &work {
        eprintln!("model work: {w}");
    }
    eprintln!(
        "done in {:.0}s; outputs in {}",
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn write_qrels(path: &Path, keyed: &[(String, String)], grades: &[Grading]) -> Result<()> {
    let mut s = String::new();
    for ((q, d), g) in keyed.iter().zip(grades) {
        s.push_str(&format!("{q} 0 {d} {}\n", g.grade));
    }
    std::fs::write(path, s).with_context(|| path.display().to_string())
}


/// Copies a checkpoint folder (flat: weights, config, tokenizer, provenance) to `to`, replacing
/// what was there.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| to.display().to_string())?;
    }
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let path = entry?.path();
        if path.is_file() {
            let dest = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &dest).with_context(|| dest.display().to_string())?;
        }
    }
    Ok(())
}

/// The trainer's checkpoint id recorded in a student folder's provenance.
fn previous_checkpoint_id(ckpt: &Path) -> Option<String> {
    let text = std::fs::read_to_string(ckpt.join("labelfleet.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    meta["provenance"]["checkpoint_id"].as_str().map(String::from)
}

/// The throughput to report for `model`: the one measured now (remembered for re-runs), or the
/// last one measured.
fn remember_rate(cache: &mut Cache<f64>, model: &str, measured: Option<f64>) -> Result<Option<f64>> {
    if let Some(r) = measured {
        cache.insert(model.to_string(), r)?;
        cache.flush()?;
        return Ok(Some(r));
    }
    Ok(cache.get(model).copied())
}
