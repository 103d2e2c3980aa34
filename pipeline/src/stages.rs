//! The stages of the method, in the order `run` calls them. Each takes what the stages before
//! it made and returns what it makes; the cluster and the caches travel in a [`Context`].

use crate::cluster::{to_proto_document, Cluster};
use crate::report::{agreement_report, Row};
use crate::{Config, PipelineError, Result};
use labelfleet_cache::{self as cache, Cache};
use labelfleet_corpus::bm25::hard_negatives;
use labelfleet_corpus::{ingest_path, Document, IngestLimits};
use labelfleet_eval::{Judgment, Measure};
use labelfleet_proto::v1::{judge, model_ref, Committee, DistillRequest, ModelRef};
use labelfleet_types::card::{model_card, CardFigures};
use labelfleet_types::grading::JudgeGrading;
use labelfleet_types::prompt::{METADATA_QUERY_PROMPT_VERSION, QUERY_PROMPT_VERSION};
use labelfleet_types::{GeneratedQuery, GradePrompt, Grading, Pair};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Salt of the evaluation pool's sampling seed.
const EVAL_POOL_SALT: u64 = 0x6576_616c_706f_6f6c;
/// Pairs per task of the grading jobs.
const TASK_SIZE: u32 = 64;
/// How deep the evaluation pool's BM25 rankings go (a judged document below it has BM25 score 0).
const POOL_SEARCH_DEPTH: usize = 1000;
/// Pairs per optimizer step of the student's distillation.
const STUDENT_BATCH: u32 = 16;

fn input(message: String) -> PipelineError {
    PipelineError::Input(message)
}

/// What every stage that does model work needs: the cluster, the output folder, the
/// content-keyed caches and the log of work done.
pub struct Context<'a> {
    pub cluster: &'a mut Cluster,
    pub out: PathBuf,
    /// Folder of the content-keyed caches (shared by runs: keyed by content, never by run).
    pub cache: PathBuf,
    pub grades: Cache<Grading>,
    pub rates: Cache<f64>,
    /// One line per model stage: what was computed, what came from the cache.
    pub work: Vec<String>,
}

impl<'a> Context<'a> {
    /// Opens the caches under `cache`.
    pub fn open(cluster: &'a mut Cluster, out: &Path, cache: &Path) -> Result<Self> {
        Ok(Context {
            cluster,
            out: out.to_path_buf(),
            cache: cache.to_path_buf(),
            grades: Cache::open(&cache.join("grades.jsonl"))?,
            rates: Cache::open(&cache.join("rates.jsonl"))?,
            work: vec![],
        })
    }
}

/// Refuses a configuration the method cannot run with.
pub fn check_config(cfg: &Config) -> Result<()> {
    if cfg.max_len < 128 {
        return Err(input(format!(
            "--max-len {} is too short for the grading and query prompts (at least 128)",
            cfg.max_len
        )));
    }
    Ok(())
}

/// The corpus's accepted documents, and its id on the cluster (whose workers search it).
pub struct Corpus {
    pub docs: Vec<Document>,
    pub id: String,
}

impl Corpus {
    pub fn by_id(&self) -> HashMap<&str, &Document> {
        self.docs.iter().map(|d| (d.id.as_str(), d)).collect()
    }
}

/// Stage 1: ingests the corpus (a JSONL file or a folder), uploaded to the cluster as `id`.
pub fn load_corpus(path: &Path, id: &str) -> Result<Corpus> {
    let report = ingest_path(path, IngestLimits::default())?;
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
        return Err(input("the corpus needs at least two documents".into()));
    }
    Ok(Corpus {
        docs,
        id: id.to_string(),
    })
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

/// The teacher, run by the cluster's workers: a local decoder, or an OpenAI-compatible
/// endpoint the workers call, that writes the queries; and what grades the pairs: that model,
/// or a committee of judges.
pub struct Teacher {
    /// The model that writes the queries (and grades, without a committee).
    pub model: model_ref::Source,
    /// Fingerprint of its weights (or of the endpoint's description): the query cache's key.
    pub writer_fingerprint: String,
    /// What grades: `model`, or the committee.
    pub grader: model_ref::Source,
    /// Fingerprint of the grader (its weights, or the committee's judges and corpus).
    pub fingerprint: String,
    /// Cache key of its grades: fingerprint and prompt version.
    pub id: String,
    /// Provenance written with its labels.
    pub name: String,
    pub prompt: GradePrompt,
}

impl Teacher {
    pub fn resolve(cfg: &Config, corpus: &Corpus) -> Result<Teacher> {
        let prompt = cfg.teacher_prompt;
        let (model, fingerprint, name) = match &cfg.teacher_api {
            Some(endpoint) => {
                // as the workers' clients describe it in their labels
                let describe =
                    format!("api:{}@{}", endpoint.model.trim(), endpoint.base_url.trim());
                (
                    model_ref::Source::Openai(endpoint.clone()),
                    cache::key(&[&describe]),
                    format!("{describe} prompt={}", prompt.version()),
                )
            }
            None => {
                let dir = labelfleet_types::resolve_model(&cfg.teacher);
                (
                    model_ref::Source::LocalPath(dir.display().to_string()),
                    fingerprint(&dir, "teacher")?,
                    format!("decoder:{} prompt={}", dir.display(), prompt.version()),
                )
            }
        };
        let writer_fingerprint = fingerprint.clone();
        let (grader, fingerprint, name) = match &cfg.committee {
            None => (model.clone(), fingerprint, name),
            Some(c) => (
                model_ref::Source::Committee(c.clone()),
                committee_fingerprint(c, corpus)?,
                committee_name(c, prompt),
            ),
        };
        Ok(Teacher {
            id: format!("{fingerprint}:{}", prompt.version()),
            model,
            writer_fingerprint,
            grader,
            fingerprint,
            name,
            prompt,
        })
    }
}

/// A committee's fingerprint: its judges, their models' weights, and the corpus its similarity
/// judges read (their feedback and calibration depend on every document).
fn committee_fingerprint(c: &Committee, corpus: &Corpus) -> Result<String> {
    let mut parts = vec![format!("{c:?}")];
    for j in &c.judges {
        let model = match &j.kind {
            Some(judge::Kind::LocalPath(p)) => p,
            Some(judge::Kind::Similarity(s)) => &s.encoder,
            None => continue,
        };
        parts.push(fingerprint(
            &labelfleet_types::resolve_model(model),
            "judge",
        )?);
    }
    if c.judges
        .iter()
        .any(|j| matches!(j.kind, Some(judge::Kind::Similarity(_))))
    {
        let hashes: Vec<String> = corpus.docs.iter().map(|d| d.content_hash()).collect();
        parts.push(cache::key(
            &hashes.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
    }
    Ok(cache::key(
        &parts.iter().map(String::as_str).collect::<Vec<_>>(),
    ))
}

/// How a committee's labels name it: each judge, its model and weight.
fn committee_name(c: &Committee, prompt: GradePrompt) -> String {
    let judges: Vec<String> = c
        .judges
        .iter()
        .map(|j| match &j.kind {
            Some(judge::Kind::Similarity(s)) => format!(
                "{}={}x(similarity:{} feedback={}x{})",
                j.name, j.weight, s.encoder, s.feedback_depth, s.feedback_weight
            ),
            Some(judge::Kind::LocalPath(p)) => {
                format!(
                    "{}={}x(grader:{p} prompt={})",
                    j.name,
                    j.weight,
                    prompt.version()
                )
            }
            None => format!("{}={}x(?)", j.name, j.weight),
        })
        .collect();
    format!("committee:{}", judges.join(" + "))
}

/// What identifies a model folder's weights in the caches' keys. A folder this process
/// cannot see (the coordinator of a cluster whose models live on the workers) is named by its
/// path: the workers resolve it, and the caches are keyed by what was asked for.
fn fingerprint(dir: &Path, what: &str) -> Result<String> {
    if !dir.exists() {
        return Ok(cache::key(&["path", &dir.display().to_string()]));
    }
    cache::model_fingerprint(dir)
        .map_err(|e| PipelineError::Input(format!("{what} {}: {e}", dir.display())))
}

/// Stage 2: the seed documents, a seeded sample of the corpus.
pub fn sample_seeds<'d>(docs: &'d [Document], n: usize, rng: &mut StdRng) -> Vec<&'d Document> {
    let mut seeds: Vec<&Document> = docs.iter().collect();
    seeds.shuffle(rng);
    seeds.truncate(n);
    seeds
}

/// Stage 3: synthetic queries for the seed documents, written by the teacher (a synthesis job
/// on the cluster's workers), cached per document; written to `queries.jsonl`.
pub fn synthesize_queries(
    ctx: &mut Context,
    cfg: &Config,
    teacher: &Teacher,
    seeds: &[&Document],
) -> Result<Vec<GeneratedQuery>> {
    let mut query_cache: Cache<Vec<GeneratedQuery>> =
        Cache::open(&ctx.cache.join("queries.jsonl"))?;
    // the worker's sampling: temperature 0.8, top-p 0.95, 32 new tokens, seeded by the documents
    let sampling = format!(
        "worker-synthesis:{}:{}:{}:{}:{METADATA_QUERY_PROMPT_VERSION}",
        cfg.queries_per_doc, cfg.metadata_queries_per_doc, cfg.seed, cfg.max_len
    );
    let qkey = |d: &Document| {
        cache::key(&[
            &teacher.writer_fingerprint,
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
    if !missing.is_empty() {
        let written = queries_from_cluster(ctx.cluster, cfg, teacher, &missing)?;
        for (d, result) in missing.iter().zip(written) {
            match result {
                Ok(mine) => query_cache.insert(qkey(d), mine)?,
                Err(e) => eprintln!("rejected: seed document {}: {e}", d.id),
            }
        }
        query_cache.flush()?;
    }
    let queries: Vec<GeneratedQuery> = seeds
        .iter()
        .flat_map(|d| query_cache.get(&qkey(d)).cloned().unwrap_or_default())
        .collect();
    ctx.work.push(format!(
        "query synthesis: {} documents generated, {} from cache",
        missing.len(),
        seeds.len() - missing.len()
    ));
    write_jsonl(&ctx.out.join("queries.jsonl"), &queries)?;
    eprintln!(
        "[2/6] {} queries for {} seed documents",
        queries.len(),
        seeds.len()
    );
    if queries.len() < 5 {
        return Err(input(format!(
            "only {} usable queries were written; raise --seed-docs",
            queries.len()
        )));
    }
    Ok(queries)
}

/// Each seed document's queries from a synthesis job on the cluster's workers.
fn queries_from_cluster(
    cluster: &mut Cluster,
    cfg: &Config,
    teacher: &Teacher,
    missing: &[&Document],
) -> Result<Vec<Result<Vec<GeneratedQuery>, String>>> {
    let written = cluster.synthesize(
        teacher.model.clone(),
        missing.iter().map(|d| to_proto_document(d)).collect(),
        cfg.queries_per_doc as u32,
        cfg.metadata_queries_per_doc as u32,
        cfg.max_len,
        cfg.seed,
    )?;
    Ok(missing
        .iter()
        .map(|d| {
            Ok(written
                .iter()
                .filter(|q| q.doc_id == d.id)
                .map(|q| GeneratedQuery {
                    doc_id: q.doc_id.clone(),
                    query: q.text.clone(),
                    prompt_version: q.prompt_version.clone(),
                    metadata_field: (!q.metadata_field.is_empty())
                        .then(|| q.metadata_field.clone()),
                })
                .collect())
        })
        .collect())
}

/// The (query, document) pairs to grade, with their texts.
pub struct Candidates {
    /// (query text, document id), in order.
    pub keyed: Vec<(String, String)>,
    /// The engine's pairs (`syn<i>`), in the same order.
    pub pairs: Vec<Pair>,
    /// Queries dropped by the round-trip filter.
    pub dropped: usize,
}

/// Stage 4: the round-trip filter (BM25 must rank the seed within `consistency_depth`) and
/// the candidates: the seed as the positive, plus hard negatives from the BM25 ranking.
pub fn candidates(
    ctx: &mut Context,
    cfg: &Config,
    corpus: &Corpus,
    queries: &[GeneratedQuery],
    rng: &mut StdRng,
) -> Result<Candidates> {
    let mut keyed: Vec<(String, String)> = vec![];
    let mut dropped = 0usize;
    let texts: Vec<String> = queries.iter().map(|q| q.query.clone()).collect();
    let depth = cfg.bm25_depth.max(cfg.consistency_depth);
    let rankings = ctx.cluster.search(&corpus.id, &texts, depth, "negatives")?;
    for (q, hits) in queries.iter().zip(rankings) {
        if cfg.consistency_depth > 0
            && !hits
                .iter()
                .take(cfg.consistency_depth)
                .any(|h| h.id == q.doc_id)
        {
            dropped += 1;
            continue;
        }
        let hits: Vec<_> = hits.into_iter().take(cfg.bm25_depth).collect();
        let positives: HashSet<&str> = [q.doc_id.as_str()].into();
        keyed.push((q.query.clone(), q.doc_id.clone()));
        for h in hard_negatives(
            &hits,
            &positives,
            cfg.negatives_per_query,
            cfg.rank_sampling,
            rng,
        ) {
            keyed.push((q.query.clone(), h.id));
        }
    }
    let by_id = corpus.by_id();
    let pairs: Vec<Pair> = keyed
        .iter()
        .enumerate()
        .map(|(i, (q, d))| pair_for(format!("syn{i}"), q, by_id[d.as_str()]))
        .collect();
    eprintln!(
        "[3/6] {} candidate pairs (positive + {} BM25 negatives per query); {dropped} queries dropped: BM25 does not rank their seed in its top {}",
        keyed.len(),
        cfg.negatives_per_query,
        cfg.consistency_depth
    );
    if keyed.len() < 10 {
        return Err(input(format!(
            "only {} candidate pairs; raise --seed-docs",
            keyed.len()
        )));
    }
    Ok(Candidates {
        keyed,
        pairs,
        dropped,
    })
}

/// Who grades a set of pairs: a labeling job on the cluster.
pub struct Labeler {
    model: model_ref::Source,
    prompt: GradePrompt,
    max_len: usize,
    what: &'static str,
}

impl Labeler {
    /// The teacher's labeling jobs (a local decoder, or the endpoint the workers call).
    fn teacher(teacher: &Teacher, max_len: usize) -> Labeler {
        Labeler {
            model: teacher.grader.clone(),
            prompt: teacher.prompt,
            max_len,
            what: "teacher",
        }
    }

    fn grade(&self, ctx: &mut Context, pairs: &[Pair]) -> Result<Vec<Grading>> {
        ctx.cluster.grade(
            self.model.clone(),
            self.prompt,
            pairs,
            self.max_len,
            TASK_SIZE,
            self.what,
        )
    }
}

/// Model work done by one grading call: how many pairs were graded, how many came from the cache.
pub struct Graded {
    pub grades: Vec<Grading>,
    pub computed: usize,
    /// pairs/s over the computed pairs (None when all came from the cache).
    pub rate: Option<f64>,
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

/// Grades pairs with `labeler`, taking what it can from the cache (keyed by `model`, the
/// grader's fingerprint and prompt version, and the pair's content). Only the pairs not in the
/// cache are submitted.
pub fn grade_cached(
    ctx: &mut Context,
    labeler: &Labeler,
    model: &str,
    pairs: &[Pair],
) -> Result<Graded> {
    let keys: Vec<String> = pairs.iter().map(|p| pair_key(model, p)).collect();
    let todo: Vec<usize> = (0..pairs.len())
        .filter(|&i| ctx.grades.get(&keys[i]).is_none())
        .collect();
    let mut rate = None;
    if !todo.is_empty() {
        let batch: Vec<Pair> = todo.iter().map(|&i| pairs[i].clone()).collect();
        let start = Instant::now();
        let grades = labeler.grade(ctx, &batch)?;
        rate = Some(grades.len() as f64 / start.elapsed().as_secs_f64().max(1e-9));
        for (&i, g) in todo.iter().zip(grades) {
            ctx.grades.insert(keys[i].clone(), g)?;
        }
        ctx.grades.flush()?;
    }
    let grades = keys
        .iter()
        .map(|k| ctx.grades.get(k).cloned().expect("graded or cached"))
        .collect();
    Ok(Graded {
        grades,
        computed: todo.len(),
        rate,
    })
}

/// Stage 5: the teacher's grades of the candidates (a labeling job), written to
/// `teacher_labels.jsonl`.
pub fn teacher_grades(
    ctx: &mut Context,
    cfg: &Config,
    teacher: &Teacher,
    cand: &Candidates,
) -> Result<Graded> {
    let labeler = Labeler::teacher(teacher, cfg.max_len);
    let graded = grade_cached(ctx, &labeler, &teacher.id, &cand.pairs)?;
    ctx.work.push(format!(
        "teacher grading (synthetic pairs): {} graded, {} from cache",
        graded.computed,
        cand.pairs.len() - graded.computed
    ));
    write_labels(
        &ctx.out.join("teacher_labels.jsonl"),
        &cand.keyed,
        &cand.pairs,
        &graded.grades,
        &Provenance {
            model: &teacher.name,
            checkpoint: &teacher.fingerprint,
            prompt_version: teacher.prompt.version(),
        },
    )?;
    let mut hist = [0usize; 4];
    graded.grades.iter().for_each(|g| hist[g.grade] += 1);
    eprintln!(
        "[4/6] teacher grades for {} pairs: {hist:?}",
        graded.grades.len()
    );
    Ok(graded)
}

/// The distilled student: where the workers find it, its local copy, and how it did against
/// its teacher on the held-out queries.
pub struct Student {
    /// The model the student's grading job pins: the pushed checkpoint, or the local copy.
    pub source: model_ref::Source,
    /// The user's copy (`out/student`).
    pub dir: PathBuf,
    /// Cache key of its grades.
    pub id: String,
    /// Provenance written with its labels.
    pub name: String,
    /// The trainer's checkpoint id.
    pub checkpoint: String,
    /// (grade agreement, expected-grade error) with the teacher on held-out queries ...
    pub heldout: (f64, f64),
    /// ... and the same for the majority class.
    pub majority: (f64, f64),
}

/// The distillation dataset: one JSON line per candidate, the pair and its teacher
/// distribution.
fn dataset_lines(pairs: &[Pair], grades: &[Grading]) -> Result<Vec<String>> {
    pairs
        .iter()
        .zip(grades)
        .map(|(p, g)| {
            let mut v = serde_json::to_value(p)?;
            v["distribution"] = serde_json::json!(g.distribution);
            Ok(v.to_string())
        })
        .collect()
}

/// What the trainer makes of a request, for the student cache: changed when training changes
/// what the same request gives (v2: grades calibrated on the held-out queries).
const TRAINING_RECIPE: &str = "distill-v2";

/// Stage 6: distillation on the trainer, with a held-out split by query. The dataset goes into
/// the cluster's store (`datasets/teacher-<key>.jsonl`); the checkpoint is pushed to the
/// workers and copied from the store to `out/student`. Reused when `out/student` was made of
/// the same base model, teacher labels and config.
pub fn distill(
    ctx: &mut Context,
    cfg: &Config,
    teacher: &Teacher,
    cand: &Candidates,
    grades: &[Grading],
) -> Result<Student> {
    let student_dir = labelfleet_types::resolve_model(&cfg.student);
    // the dataset and checkpoint are keyed by what they are made of: teacher labels, base
    // model, depth, input length and training config
    let lines = dataset_lines(&cand.pairs, grades)?;
    let dataset_key = cache::key(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let request = DistillRequest {
        job_id: "run".into(),
        base: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath(
                student_dir.display().to_string(),
            )),
        }),
        dataset: format!("datasets/teacher-{dataset_key}.jsonl"),
        epochs: cfg.epochs as u32,
        learning_rate: cfg.learning_rate,
        heldout_fraction: cfg.heldout,
        seed: cfg.seed,
        keep_layers: cfg.student_layers as u32,
        batch_size: STUDENT_BATCH,
        max_tokens: cfg.student_max_len as u32,
    };
    let student_key = cache::key(&[
        TRAINING_RECIPE,
        &fingerprint(&student_dir, "student")?,
        &format!("{request:?}"),
        &cfg.student_max_len.to_string(),
    ]);
    // the local copy is cached by what it is made of, and copied to `out/student`
    let ckpt = ctx.cache.join("students").join(&student_key);
    let previous = read_json(&ckpt.join("labelfleet.json"))
        .filter(|m| m["provenance"]["cache_key"] == student_key.as_str());
    let (source, checkpoint, heldout, majority) = match previous {
        Some(meta) => {
            ctx.work.push(
                "distillation: reused the checkpoint (same base model, teacher labels and config)"
                    .into(),
            );
            let p = &meta["provenance"];
            let num = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
            let id = p["checkpoint_id"].as_str().unwrap_or_default().to_string();
            // the workers have the checkpoint by its id (pushed, and kept in their folder);
            // this process's copy is only a path on this machine
            let source = match id.is_empty() {
                true => model_ref::Source::LocalPath(ckpt.display().to_string()),
                false => model_ref::Source::CheckpointId(id.clone()),
            };
            (
                source,
                id,
                (
                    num("heldout_agreement_with_teacher"),
                    num("heldout_expected_grade_mae"),
                ),
                (num("majority_baseline"), num("majority_expected_grade_mae")),
            )
        }
        None => {
            ctx.cluster
                .put(&request.dataset, (lines.join("\n") + "\n").into_bytes())?;
            let run = ctx.cluster.distill(request)?;
            // the user's copy of the checkpoint, with what it is made of
            ctx.cluster
                .get_dir(&format!("checkpoints/{}", run.checkpoint_id), &ckpt)?;
            record_provenance(&ckpt, &student_key, &teacher.name, &run.checkpoint_id)?;
            ctx.work.push(format!(
                "distillation: trained checkpoint {} on the trainer",
                run.checkpoint_id
            ));
            (
                model_ref::Source::CheckpointId(run.checkpoint_id.clone()),
                run.checkpoint_id.clone(),
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
        heldout.0, majority.0, heldout.1, majority.1,
        checkpoint
    );
    let copy = ctx.out.join("student");
    copy_dir(&ckpt, &copy)?;
    Ok(Student {
        source,
        id: format!("{}:student", cache::model_fingerprint(&ckpt)?),
        name: format!("cross-encoder:{checkpoint}"),
        dir: copy,
        checkpoint,
        heldout,
        majority,
    })
}

/// Copies the files of folder `from` into `to` (made afresh).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| PipelineError::io(to, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| PipelineError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| PipelineError::io(from, e))? {
        let path = entry.map_err(|e| PipelineError::io(from, e))?.path();
        if path.is_file() {
            let dest = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &dest).map_err(|e| PipelineError::io(&dest, e))?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Adds the cache key, the teacher and the checkpoint id to the student's `labelfleet.json`.
fn record_provenance(ckpt: &Path, key: &str, teacher: &str, checkpoint_id: &str) -> Result<()> {
    let meta_path = ckpt.join("labelfleet.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| PipelineError::io(&meta_path, e))?;
    let mut meta: serde_json::Value = serde_json::from_str(&text)?;
    meta["provenance"]["cache_key"] = serde_json::json!(key);
    meta["provenance"]["teacher"] = serde_json::json!(teacher);
    meta["provenance"]["checkpoint_id"] = serde_json::json!(checkpoint_id);
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)?)
        .map_err(|e| PipelineError::io(&meta_path, e))
}

/// The evaluation pool (the student's targets): sampled queries, each with its judged
/// documents plus the top-k BM25 documents not judged (grade 0).
pub struct Pool {
    /// (query id, document id, human grade; 0 without judgments).
    pub judged: Vec<(String, String, usize)>,
    /// Whether humans judged the pool's queries (the agreement report needs them).
    pub has_judgments: bool,
    /// The engine's pairs, in the same order.
    pub pairs: Vec<Pair>,
    /// BM25's score of each pair.
    pub bm25: Vec<f64>,
}

/// `qid<TAB>text` lines.
pub fn read_queries(path: &Path) -> Result<BTreeMap<String, String>> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| PipelineError::io(path, e))?
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        })
        .collect())
}

/// TREC qrels (`qid 0 docid grade`), grades capped at 3.
pub fn read_qrels(path: &Path) -> Result<BTreeMap<String, BTreeMap<String, usize>>> {
    let mut qrels: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let [q, _, d, g] = f[..] else {
            return Err(input(format!("{at}: expected `qid 0 docid grade`")));
        };
        let g: usize = g
            .parse()
            .map_err(|e| input(format!("{at}: grade `{g}`: {e}")))?;
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), g.min(3));
    }
    Ok(qrels)
}

/// Stage 7: the evaluation pool from the human judgments, sampled with its own generator (the
/// pool must not depend on how many queries the stages before wrote, so every run with this
/// seed is scored on the same pool).
pub fn evaluation_pool(
    ctx: &mut Context,
    cfg: &Config,
    corpus: &Corpus,
    queries: &Path,
    qrels: Option<&Path>,
) -> Result<Pool> {
    let texts = read_queries(queries)?;
    let has_judgments = qrels.is_some();
    let qrels = match qrels {
        Some(path) => read_qrels(path)?,
        // no judgments: every query's targets are its BM25 top k
        None => texts.keys().map(|q| (q.clone(), BTreeMap::new())).collect(),
    };
    let by_id = corpus.by_id();
    let mut eval_q: Vec<&String> = qrels.keys().filter(|q| texts.contains_key(*q)).collect();
    eval_q.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ EVAL_POOL_SALT));
    eval_q.truncate(cfg.eval_sample);
    let mut pool = Pool {
        judged: vec![],
        has_judgments,
        pairs: vec![],
        bm25: vec![],
    };
    let eval_texts: Vec<String> = eval_q.iter().map(|q| texts[*q].clone()).collect();
    let rankings = ctx
        .cluster
        .search(&corpus.id, &eval_texts, POOL_SEARCH_DEPTH, "targets")?;
    for (q, hits) in eval_q.iter().zip(rankings) {
        let judged = &qrels[*q];
        let score_of: HashMap<&str, f32> = hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
        let mut docs_q: Vec<(String, usize)> = judged
            .iter()
            .filter(|(d, _)| by_id.contains_key(d.as_str()))
            .map(|(d, g)| (d.clone(), *g))
            .collect();
        docs_q.extend(
            hits.iter()
                .filter(|h| !judged.contains_key(&h.id))
                .take(cfg.pool_k)
                .map(|h| (h.id.clone(), 0)),
        );
        for (d, g) in docs_q {
            pool.pairs.push(pair_for(
                format!("eval-q{q}-d{d}"),
                &texts[*q],
                by_id[d.as_str()],
            ));
            pool.bm25
                .push(*score_of.get(d.as_str()).unwrap_or(&0.0) as f64);
            pool.judged.push(((*q).clone(), d, g));
        }
    }
    eprintln!(
        "[6/6] evaluation pool: {} queries, {} pairs (judged + top-{} BM25 unjudged as grade 0)",
        eval_q.len(),
        pool.judged.len(),
        cfg.pool_k
    );
    Ok(pool)
}

/// Stage 8: teacher and student grade the pool (cached); the student's labels are written
/// (`eval_student_labels.jsonl`, `eval_student.qrels`). Returns the report's rows: BM25,
/// teacher, student.
pub fn evaluate(
    ctx: &mut Context,
    cfg: &Config,
    teacher: &Teacher,
    student: &Student,
    pool: &Pool,
) -> Result<Vec<Row>> {
    let teacher_labeler = Labeler::teacher(teacher, cfg.max_len);
    let student_labeler = Labeler {
        model: student.source.clone(),
        prompt: GradePrompt::default(),
        max_len: cfg.student_max_len,
        what: "student",
    };
    // without human judgments there is nothing to compare the teacher with: the student
    // labels the targets alone
    let t = if pool.has_judgments {
        ctx.cluster.stage("teacher")?;
        Some(grade_cached(
            ctx,
            &teacher_labeler,
            &teacher.id,
            &pool.pairs,
        )?)
    } else {
        None
    };
    ctx.cluster.stage("student")?;
    let s = grade_cached(ctx, &student_labeler, &student.id, &pool.pairs)?;
    ctx.work.push(format!(
        "evaluation pool: teacher graded {}, student graded {}, the rest from cache",
        t.as_ref().map_or(0, |t| t.computed),
        s.computed
    ));
    // throughput is measured when a labeler grades the pool; a re-run reports the last
    // measurement for the same model
    let s_rate = remember_rate(&mut ctx.rates, &student.id, s.rate)?;
    let keyed: Vec<(String, String)> = pool
        .judged
        .iter()
        .map(|(q, d, _)| (q.clone(), d.clone()))
        .collect();
    write_labels(
        &ctx.out.join("eval_student_labels.jsonl"),
        &keyed,
        &pool.pairs,
        &s.grades,
        &Provenance {
            model: &student.name,
            checkpoint: &student.checkpoint,
            prompt_version: teacher.prompt.version(),
        },
    )?;
    write_qrels(&ctx.out.join("eval_student.qrels"), &keyed, &s.grades)?;
    let Some(t) = t else {
        return Ok(vec![]);
    };
    let t_rate = remember_rate(&mut ctx.rates, &teacher.id, t.rate)?;
    let judgments = |pred: &dyn Fn(usize) -> (usize, f64)| -> Vec<Judgment> {
        pool.judged
            .iter()
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
    let (tg, sg) = (&t.grades, &s.grades);
    Ok(vec![
        Row {
            name: "BM25 score".into(),
            judgments: judgments(&|i| (0, pool.bm25[i])),
            pairs_per_s: None,
            graded: false,
        },
        Row {
            name: teacher_column(cfg),
            judgments: judgments(&|i| (tg[i].grade, tg[i].expected as f64)),
            pairs_per_s: t_rate,
            graded: true,
        },
        Row {
            name: format!("student ({}, distilled)", cfg.student),
            judgments: judgments(&|i| (sg[i].grade, sg[i].expected as f64)),
            pairs_per_s: s_rate,
            graded: true,
        },
    ])
}

/// The teacher's column in the report: the model, or the committee's judges.
fn teacher_column(cfg: &Config) -> String {
    match &cfg.committee {
        Some(c) => {
            let judges: Vec<&str> = c.judges.iter().map(|j| j.name.as_str()).collect();
            format!("teacher (committee: {})", judges.join(" + "))
        }
        None => format!("teacher ({})", cfg.teacher),
    }
}

/// Sizes of what the stages made, for the report.
pub struct Counts {
    pub documents: usize,
    pub queries: usize,
    pub candidates: usize,
    /// Queries dropped by the round-trip filter.
    pub dropped: usize,
}

/// Stage 9: the agreement report (tables, `agreement.png`) and `report.json`.
#[allow(clippy::too_many_arguments)]
pub fn write_report(
    ctx: &Context,
    cfg: &Config,
    counts: &Counts,
    teacher: &Teacher,
    teacher_graded: &Graded,
    student: &Student,
    rows: &[Row],
    started: Instant,
) -> Result<()> {
    let report = match rows.is_empty() {
        true => None,
        false => Some(agreement_report(
            rows,
            cfg.price_per_hour,
            &cfg.out.join("agreement.png"),
            cfg.seed,
        )?),
    };
    let (held, majority) = (student.heldout, student.majority);
    let json = serde_json::json!({
        "corpus_documents": counts.documents, "queries": counts.queries,
        "candidate_pairs": counts.candidates,
        "queries_dropped_by_round_trip": counts.dropped,
        "teacher_prompt_version": cfg.teacher_prompt.version(),
        "api_teacher_usage": teacher_api_usage(ctx, cfg),
        "teacher_pairs_per_s": teacher_graded.rate,
        "student_heldout_agreement_with_teacher": held.0, "heldout_majority_baseline": majority.0,
        "student_heldout_expected_grade_mae": held.1, "heldout_majority_expected_grade_mae": majority.1,
        "model_work": ctx.work,
        "agreement_with_humans": report,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let path = cfg.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .map_err(|e| PipelineError::io(&path, e))?;
    write_student_card(
        cfg,
        &teacher.name,
        json["agreement_with_humans"].as_object(),
        rows,
    )?;
    for w in &ctx.work {
        eprintln!("model work: {w}");
    }
    eprintln!("stages done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Completes the model card of the user's copy of the student (`out/student/README.md`) with
/// its teacher, its agreement with human judgments beside the teacher's, and the throughputs
/// measured in this run.
fn write_student_card(
    cfg: &Config,
    teacher: &str,
    agreement: Option<&serde_json::Map<String, serde_json::Value>>,
    rows: &[Row],
) -> Result<()> {
    let dir = cfg.out.join("student");
    let record_path = dir.join("labelfleet.json");
    let Ok(text) = std::fs::read_to_string(&record_path) else {
        return Ok(()); // no local copy of the student
    };
    let record: serde_json::Value = serde_json::from_str(&text)?;
    let mut figures = CardFigures {
        teacher: Some(teacher.to_string()),
        ..Default::default()
    };
    let comparison = agreement.and_then(|a| a.get("student_vs_teacher"));
    for m in comparison
        .and_then(|c| c["measures"].as_array())
        .into_iter()
        .flatten()
    {
        let label = Measure::ALL
            .into_iter()
            .find(|x| serde_json::to_value(x).ok().as_ref() == Some(&m["measure"]))
            .map_or("?", |x| x.label());
        if let (Some(a), Some(b)) = (m["a"].as_f64(), m["b"].as_f64()) {
            figures.human_agreement.push((label.to_string(), a, b));
        }
    }
    if let Some(c) = comparison {
        figures.human_agreement_on = Some(format!(
            "{} pairs over {} queries: the human-judged documents of each query and its top-{} BM25 documents not judged, as grade 0",
            c["pairs"], c["queries"], cfg.pool_k
        ));
    }
    let graded: Vec<&Row> = rows.iter().filter(|r| r.graded).collect();
    if let [t, s, ..] = graded[..] {
        if let (Some(tr), Some(sr)) = (t.pairs_per_s, s.pairs_per_s) {
            figures.throughput = Some((sr, tr, "the machine of this run".to_string()));
        }
    }
    let path = dir.join("README.md");
    std::fs::write(&path, model_card(&record, &figures)).map_err(|e| PipelineError::io(&path, e))
}

/// What the API teacher spent in this run, from the usage its tasks' results carried (None
/// for a local teacher), with what the numbers cover.
fn teacher_api_usage(ctx: &Context, cfg: &Config) -> Option<serde_json::Value> {
    cfg.teacher_api.as_ref()?;
    let spend = ctx.cluster.api_spend();
    let mut v = serde_json::to_value(spend).ok()?;
    let complete = spend.batches_without_usage == 0;
    v["complete"] = serde_json::json!(complete);
    v["covers"] = serde_json::json!(if complete {
        "the committed attempts of this run's API tasks, reported by the workers; grades and \
         queries from the cache cost nothing; attempts that failed or lost the commit are not \
         counted"
    } else {
        "a lower bound: some results came without usage (a worker that does not report it)"
    });
    Some(v)
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
    /// A committee's judges, each with its own distribution.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    judges: &'a [JudgeGrading],
}

fn write_jsonl<T: serde::Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    std::fs::write(path, out).map_err(|e| PipelineError::io(path, e))
}

fn write_labels(
    path: &Path,
    keyed: &[(String, String)],
    texts: &[Pair],
    grades: &[Grading],
    from: &Provenance,
) -> Result<()> {
    let records: Vec<LabelRecord> = keyed
        .iter()
        .zip(texts)
        .zip(grades)
        .map(|(((q, d), p), g)| LabelRecord {
            id: &p.id,
            query: q,
            doc_id: d,
            grade: g.grade,
            expected: g.expected,
            distribution: &g.distribution,
            model: from.model,
            checkpoint: from.checkpoint,
            prompt_version: from.prompt_version,
            judges: &g.judges,
        })
        .collect();
    write_jsonl(path, &records)
}

fn write_qrels(path: &Path, keyed: &[(String, String)], grades: &[Grading]) -> Result<()> {
    let mut s = String::new();
    for ((q, d), g) in keyed.iter().zip(grades) {
        labelfleet_types::push_qrels_line(&mut s, &format!("{q}/{d}"), q, d, g.grade)
            .map_err(|e| PipelineError::Input(e.to_string()))?;
    }
    std::fs::write(path, s).map_err(|e| PipelineError::io(path, e))
}

/// The throughput to report for `model`: the one measured now (remembered for re-runs), or the
/// last one measured.
fn remember_rate(
    cache: &mut Cache<f64>,
    model: &str,
    measured: Option<f64>,
) -> Result<Option<f64>> {
    if let Some(r) = measured {
        cache.insert(model.to_string(), r)?;
        cache.flush()?;
        return Ok(Some(r));
    }
    Ok(cache.get(model).copied())
}
