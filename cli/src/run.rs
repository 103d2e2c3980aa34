//! `labelfleet run`: the method end to end, in one process (the embedded default).
//!
//! corpus -> seed documents -> synthetic queries (SmolLM2) -> BM25 hard negatives (tantivy)
//! -> teacher grades (SmolLM2, local) -> distilled student (MiniLM cross-encoder)
//! -> agreement of BM25, teacher and student with human judgments on an evaluation pool.
//!
//! Human judgments are read only by the evaluation stage: nothing trains on them.

use crate::cache::{self, Cache};
use crate::{jsonl, progress, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_corpus::bm25::{hard_negatives, RankSampling};
use labelfleet_corpus::{ingest_dir, ingest_jsonl, Bm25Index, Document, IngestLimits};
use labelfleet_eval::{agreement, Agreement, Judgment};
use labelfleet_slm::generate::SamplingParams;
use labelfleet_slm::grading::GRADE_PROMPT_VERSION;
use labelfleet_slm::grading::{
    default_grade_labels, grade, BatchOptions, DecoderGrader, EncoderGrader,
};
use labelfleet_slm::querygen::{synthesize, GeneratedQuery, SeedDocument, QUERY_PROMPT_VERSION};
use labelfleet_slm::train::{evaluate, train, Example, TrainConfig};
use labelfleet_slm::{DecoderLm, EncodedPair, Grader, Grading, Pair, TextTokenizer};
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
    /// Student model to distil into (BERT-family cross-encoder).
    #[arg(long, default_value = "minilm")]
    student: String,
    #[arg(long, default_value_t = 24)]
    seed_docs: usize,
    #[arg(long, default_value_t = 2)]
    queries_per_doc: usize,
    /// BM25 depth hard negatives are drawn from.
    #[arg(long, default_value_t = 20)]
    bm25_depth: usize,
    #[arg(long, default_value_t = 3)]
    negatives_per_query: usize,
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
    #[command(flatten)]
    engine: EngineArgs,
}

fn pair_for(id: String, query: &str, d: &Document) -> Pair {
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

/// Grades pairs with a progress bar, taking what it can from the cache (keyed by `model`, the
/// grader's fingerprint and prompt version, and the pair's content).
fn grade_all(
    grader: &dyn Grader,
    model: &str,
    pairs: &[Pair],
    opts: BatchOptions,
    cache: &mut Cache<Grading>,
    what: &str,
) -> Result<Graded> {
    let keys: Vec<String> = pairs.iter().map(|p| pair_key(model, p)).collect();
    let todo: Vec<usize> = (0..pairs.len())
        .filter(|&i| cache.get(&keys[i]).is_none())
        .collect();
    let mut rate = None;
    if !todo.is_empty() {
        let encoded: Vec<EncodedPair> = todo
            .iter()
            .map(|&i| grader.encode_pair(&pairs[i]))
            .collect::<Result<_, _>>()?;
        let pb = progress::bar(encoded.len() as u64, what);
        let start = Instant::now();
        let grades = grade(grader, &encoded, opts, &mut |n| pb.inc(n as u64))?;
        pb.finish();
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

#[derive(serde::Serialize)]
struct LabelRecord<'a> {
    id: &'a str,
    query: &'a str,
    doc_id: &'a str,
    grade: usize,
    expected: f32,
    distribution: &'a [f32],
    model: &'a str,
}

fn write_labels(
    path: &Path,
    pairs: &[(String, String)],
    texts: &[Pair],
    grades: &[Grading],
    model: &str,
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
            model,
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
    let opts = a.engine.batch_options(placement);
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut work: Vec<String> = vec![];
    let mut grade_cache: Cache<Grading> = Cache::open(&a.out.join("cache/grades.jsonl"))?;

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

    // 2. synthetic queries from seed documents
    let teacher_dir = labelfleet_slm::resolve_model(&a.teacher);
    let tok = TextTokenizer::from_dir(&teacher_dir)?;
    let lm = DecoderLm::load(&teacher_dir, placement, a.engine.max_len)
        .with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let mut seeds: Vec<&Document> = docs.iter().collect();
    seeds.shuffle(&mut rng);
    seeds.truncate(a.seed_docs);
    let params = SamplingParams {
        max_new_tokens: 32,
        temperature: 0.8,
        top_p: 0.95,
        seed: a.seed,
    };
    let max_prompt = a.engine.max_len - params.max_new_tokens;
    let teacher_fp = cache::model_fingerprint(&teacher_dir)?;
    let mut query_cache: Cache<Vec<GeneratedQuery>> =
        Cache::open(&a.out.join("cache/queries.jsonl"))?;
    let sampling = format!(
        "{}:{}:{}:{}:{}:{}",
        a.queries_per_doc,
        params.temperature,
        params.top_p,
        params.max_new_tokens,
        params.seed,
        max_prompt
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
    let pb = progress::bar(missing.len() as u64, "queries");
    for chunk in missing.chunks(8) {
        let batch: Vec<SeedDocument> = chunk
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
        let written = synthesize(&lm, &tok, &batch, a.queries_per_doc, &params, max_prompt)?;
        for d in chunk {
            let mine: Vec<GeneratedQuery> = written
                .iter()
                .filter(|q| q.doc_id == d.id)
                .cloned()
                .collect();
            query_cache.insert(qkey(d), mine)?;
        }
        query_cache.flush()?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
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
    let mut query_of_pair: Vec<usize> = vec![];
    for (qi, q) in queries.iter().enumerate() {
        let hits = index.search(&q.query, a.bm25_depth)?;
        let positives: HashSet<&str> = [q.doc_id.as_str()].into();
        cand.push((q.query.clone(), q.doc_id.clone()));
        query_of_pair.push(qi);
        for h in hard_negatives(
            &hits,
            &positives,
            a.negatives_per_query,
            RankSampling::Stratified,
            &mut rng,
        ) {
            cand.push((q.query.clone(), h.id));
            query_of_pair.push(qi);
        }
    }
    let train_pairs: Vec<Pair> = cand
        .iter()
        .enumerate()
        .map(|(i, (q, d))| pair_for(format!("syn{i}"), q, by_id[d.as_str()]))
        .collect();
    eprintln!(
        "[3/6] {} candidate pairs (positive + {} BM25 negatives per query)",
        cand.len(),
        a.negatives_per_query
    );

    // 4. teacher grades
    let teacher = DecoderGrader::from_parts(
        lm,
        tok,
        &default_grade_labels(),
        teacher_dir.display().to_string(),
    )?;
    let teacher_id = format!("{teacher_fp}:{GRADE_PROMPT_VERSION}");
    let graded = grade_all(
        &teacher,
        &teacher_id,
        &train_pairs,
        opts,
        &mut grade_cache,
        "teacher",
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
        &teacher.describe(),
    )?;
    let mut hist = [0usize; 4];
    teacher_grades.iter().for_each(|g| hist[g.grade] += 1);
    eprintln!(
        "[4/6] teacher grades for {} pairs: {hist:?}",
        teacher_grades.len()
    );

    // 5. distillation, with a held-out split by query
    let student_dir = labelfleet_slm::resolve_model(&a.student);
    let student = EncoderGrader::load(&student_dir, &default_grade_labels(), placement, 256)
        .with_context(|| format!("loading student {}", student_dir.display()))?;
    let mut qids: Vec<usize> = (0..queries.len()).collect();
    qids.shuffle(&mut rng);
    let n_held = ((queries.len() as f64) * a.heldout).round().max(1.0) as usize;
    let held: HashSet<usize> = qids[..n_held].iter().copied().collect();
    let (mut train_set, mut held_set) = (vec![], vec![]);
    for (i, p) in train_pairs.iter().enumerate() {
        let ex = Example {
            input: student.encode_pair(p)?,
            target: teacher_grades[i].distribution.clone(),
        };
        if held.contains(&query_of_pair[i]) {
            held_set.push(ex)
        } else {
            train_set.push(ex)
        }
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: 16,
        learning_rate: a.learning_rate,
        seed: a.seed,
        ..Default::default()
    };
    // the checkpoint is keyed by everything it is made from: base model, teacher labels, split, config
    let labels_key = cache::key(
        &train_pairs
            .iter()
            .zip(&teacher_grades)
            .map(|(p, g)| format!("{}|{:?}", pair_key("", p), g.distribution))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut held_ids: Vec<usize> = held.iter().copied().collect();
    held_ids.sort();
    let student_key = cache::key(&[
        &cache::model_fingerprint(&student_dir)?,
        &labels_key,
        &format!("{held_ids:?}"),
        &serde_json::to_string(&cfg)?,
    ]);
    let ckpt = a.out.join("student");
    let previous = std::fs::read_to_string(ckpt.join("labelfleet.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let (student, held_agreement) = match previous
        .filter(|m| m["provenance"]["cache_key"] == student_key.as_str())
    {
        Some(meta) => {
            work.push(
                "distillation: reused the checkpoint (same base model, teacher labels and config)"
                    .into(),
            );
            let agreement = meta["provenance"]["heldout_agreement_with_teacher"]
                .as_f64()
                .unwrap_or(f64::NAN);
            (
                EncoderGrader::load(&ckpt, &default_grade_labels(), placement, 256)?,
                agreement,
            )
        }
        None => {
            let total = train_set.len().div_ceil(cfg.batch_size) * cfg.epochs;
            let pb = progress::bar(total as u64, "distill");
            train(&student, &train_set, &cfg, &mut |s| {
                pb.set_message(format!("loss {:.3}", s.loss));
                pb.inc(1);
            })?;
            pb.finish();
            let held_eval = evaluate(&student, &held_set, opts.token_budget)?;
            student.save(&ckpt, serde_json::json!({
                "teacher": teacher.describe(), "train_pairs": train_set.len(), "heldout_pairs": held_set.len(),
                "train_config": cfg, "heldout_agreement_with_teacher": held_eval.agreement, "cache_key": student_key,
            }))?;
            work.push(format!(
                "distillation: trained on {} pairs",
                train_set.len()
            ));
            (student, held_eval.agreement)
        }
    };
    let majority = {
        let mut counts = [0usize; 4];
        for e in &held_set {
            let g = e
                .target
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|x| x.0)
                .unwrap_or(0);
            counts[g] += 1;
        }
        *counts.iter().max().unwrap_or(&0) as f64 / held_set.len().max(1) as f64
    };
    eprintln!(
        "[5/6] student: held-out agreement with the teacher {:.3} (majority class {:.3}) on {} pairs; checkpoint {}",
        held_agreement, majority, held_set.len(), ckpt.display()
    );
    let student_id = format!("{}:student", cache::model_fingerprint(&ckpt)?);

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
        eval_q.shuffle(&mut rng);
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
        let bm25 = agreement(&judgments(&|i| (0, bm25_score[i])), 4)?;
        let t = grade_all(
            &teacher,
            &teacher_id,
            &pool_pairs,
            opts,
            &mut grade_cache,
            "teacher",
        )?;
        let s = grade_all(
            &student,
            &student_id,
            &pool_pairs,
            opts,
            &mut grade_cache,
            "student",
        )?;
        work.push(format!(
            "evaluation pool: teacher graded {}, student graded {}, the rest from cache",
            t.computed, s.computed
        ));
        let (tg, t_rate, sg, s_rate) = (t.grades, t.rate, s.grades, s.rate);
        let teacher_agr = agreement(&judgments(&|i| (tg[i].grade, tg[i].expected as f64)), 4)?;
        let student_agr = agreement(&judgments(&|i| (sg[i].grade, sg[i].expected as f64)), 4)?;
        let keyed: Vec<(String, String)> = pool
            .iter()
            .map(|(q, d, _)| (q.clone(), d.clone()))
            .collect();
        write_labels(
            &a.out.join("eval_student_labels.jsonl"),
            &keyed,
            &pool_pairs,
            &sg,
            &student.describe(),
        )?;
        write_qrels(&a.out.join("eval_student.qrels"), &keyed, &sg)?;
        rows.push(("BM25 score".to_string(), bm25, None));
        rows.push((format!("teacher ({})", a.teacher), teacher_agr, t_rate));
        rows.push((
            format!("student ({}, distilled)", a.student),
            student_agr,
            s_rate,
        ));
    } else {
        eprintln!("[6/6] no --eval-queries/--eval-qrels: agreement with humans not measured");
    }
    print_report(&rows);
    let json = serde_json::json!({
        "corpus_documents": docs.len(), "queries": queries.len(), "candidate_pairs": cand.len(),
        "teacher_pairs_per_s": teacher_rate,
        "student_heldout_agreement_with_teacher": held_agreement, "heldout_majority_baseline": majority,
        "model_work": work,
        "agreement_with_humans": rows.iter().map(|(n, a, r)| serde_json::json!({"labeler": n, "pairs_per_s": r, "agreement": a})).collect::<Vec<_>>(),
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

fn print_report(rows: &[(String, Agreement, Option<f64>)]) {
    if rows.is_empty() {
        return;
    }
    let f = |x: f64| {
        if x.is_nan() {
            "-".to_string()
        } else {
            format!("{x:.3}")
        }
    };
    let teacher_rate = rows
        .iter()
        .find(|r| r.0.starts_with("teacher"))
        .and_then(|r| r.2);
    let table = progress::table(
        &[
            "labeler",
            "pairs",
            "accuracy",
            "kappa",
            "QW kappa",
            "alpha (ord.)",
            "pairwise acc.",
            "NDCG@10",
            "pairs/s",
            "vs teacher",
        ],
        rows.iter()
            .map(|(name, a, rate)| {
                let graded = !name.starts_with("BM25");
                vec![
                    name.clone(),
                    a.pairs.to_string(),
                    if graded { f(a.accuracy) } else { "-".into() },
                    if graded { f(a.cohen_kappa) } else { "-".into() },
                    if graded {
                        f(a.quadratic_kappa)
                    } else {
                        "-".into()
                    },
                    if graded {
                        f(a.krippendorff_alpha)
                    } else {
                        "-".into()
                    },
                    f(a.pairwise_accuracy),
                    f(a.ndcg_at_10),
                    match (graded, rate) {
                        (_, Some(r)) => format!("{r:.2}"),
                        (true, None) => "cached".into(),
                        (false, None) => "-".into(),
                    },
                    match (rate, teacher_rate) {
                        (Some(r), Some(t)) => format!("{:.1}x", r / t),
                        _ => "-".into(),
                    },
                ]
            })
            .collect(),
    );
    println!("\nAgreement with human judgments (grades 0-3; BM25 is a ranker, so only its ranking measures apply)\n{table}");
}
