//! `labelfleet label`: labels for queries over a corpus. Candidates are each query's BM25 top-k
//! (tantivy), graded by any local model: a distilled student checkpoint, or a teacher. The
//! output is TREC qrels and JSONL with the grade, its distribution, the expected grade and the
//! provenance of every label (model, checkpoint fingerprint, prompt version, BM25 rank).
//!
//! Pairs given directly go through `labelfleet score`.

use crate::{jsonl, progress, EngineArgs, Rejected};
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_corpus::{ingest_path, Bm25Index, Document, IngestLimits};
use labelfleet_slm::grading::{default_grade_labels, grade, load_grader, GRADE_PROMPT_VERSION};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Corpus: a JSONL file or a folder of .txt/.md files.
    #[arg(long)]
    corpus: PathBuf,
    /// Queries: TSV `qid<TAB>text`, or JSONL with `id` (or `query_id`) and `query`.
    #[arg(long)]
    queries: PathBuf,
    /// BM25 candidates graded per query.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Labels as JSONL (`-` for stdout).
    #[arg(long, short)]
    output: PathBuf,
    /// Labels as TREC qrels (`qid 0 docid grade`).
    #[arg(long)]
    qrels: Option<PathBuf>,
}

/// One query to label candidates for.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// Reads queries from TSV (`qid<TAB>text`) or JSONL (`{"id"|"query_id", "query"}`). A bad line
/// is an error naming the file, line and field; duplicate ids are refused.
pub fn read_queries(path: &Path) -> Result<Vec<Query>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let jsonl = text.trim_start().starts_with('{');
    let mut out: Vec<Query> = vec![];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let q = if jsonl {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
            let id = ["id", "query_id"]
                .iter()
                .find_map(|k| match v.get(*k) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
                .with_context(|| format!("{at}: field `id`: missing"))?;
            let text = v
                .get("query")
                .and_then(|q| q.as_str())
                .with_context(|| format!("{at}: record {id}: field `query`: missing"))?;
            Query {
                id,
                text: text.to_string(),
            }
        } else {
            let (id, text) = line
                .split_once('\t')
                .with_context(|| format!("{at}: expected `qid<TAB>text`"))?;
            Query {
                id: id.trim().to_string(),
                text: text.to_string(),
            }
        };
        if q.id.is_empty() {
            bail!("{at}: field `id`: empty");
        }
        if q.text.trim().is_empty() {
            bail!("{at}: record {}: field `query`: empty", q.id);
        }
        if let Some(first) = seen.insert(q.id.clone(), n + 1) {
            bail!(
                "{at}: record {}: field `id`: duplicate of line {first}",
                q.id
            );
        }
        out.push(q);
    }
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(out)
}

pub fn read_corpus(path: &Path) -> Result<Vec<Document>> {
    let report = ingest_path(path, IngestLimits::default())?;
    for r in report.rejected.iter().take(10) {
        eprintln!("rejected: {r}");
    }
    if !report.rejected.is_empty() {
        eprintln!(
            "corpus: {} documents accepted, {} rejected (listed above, first 10)",
            report.accepted.len(),
            report.rejected.len()
        );
    }
    Ok(report.accepted)
}

#[derive(serde::Serialize)]
struct LabelLine<'a> {
    query_id: &'a str,
    query: &'a str,
    doc_id: &'a str,
    bm25_rank: usize,
    bm25_score: f32,
    grade: usize,
    expected: f32,
    distribution: &'a [f32],
    truncated: bool,
    model: &'a str,
    checkpoint: &'a str,
    prompt_version: &'a str,
}

pub fn run(a: LabelArgs) -> Result<()> {
    let placement = a.engine.placement()?;
    let dir = labelfleet_slm::resolve_model(&a.engine.model);
    let grader = load_grader(&dir, &default_grade_labels(), placement, a.engine.max_len)
        .with_context(|| format!("loading model {}", dir.display()))?;
    let checkpoint = labelfleet_cache::model_fingerprint(&dir)?;
    let queries = read_queries(&a.queries)?;
    let docs = read_corpus(&a.corpus)?;
    if docs.is_empty() {
        bail!("{}: no documents accepted", a.corpus.display());
    }
    let by_id: HashMap<&str, &Document> = docs.iter().map(|d| (d.id.as_str(), d)).collect();
    let index = Bm25Index::build(&docs, None)?;

    let mut candidates = vec![];
    let mut pairs = vec![];
    let mut rejected = 0usize;
    for q in &queries {
        for hit in index.search(&q.text, a.top_k)? {
            let pair = crate::run::pair_for(
                format!("{}:{}", q.id, hit.id),
                &q.text,
                by_id[hit.id.as_str()],
            );
            match grader.encode_pair(&pair) {
                Ok(e) => {
                    candidates.push((q, hit));
                    pairs.push(e);
                }
                Err(e) => {
                    rejected += 1;
                    eprintln!("rejected: query {} document {}: {e}", q.id, hit.id);
                }
            }
        }
    }
    eprintln!(
        "{} queries, {} candidate pairs (BM25 top-{})",
        queries.len(),
        pairs.len(),
        a.top_k
    );
    let pb = progress::bar(pairs.len() as u64, "labels");
    let start = Instant::now();
    let grades = grade(
        grader.as_ref(),
        &pairs,
        a.engine.batch_options(placement),
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish();
    let secs = start.elapsed().as_secs_f64();

    let model = grader.describe();
    let mut out = jsonl::Writer::create(&a.output)?;
    let mut qrels = String::new();
    for (((q, hit), e), g) in candidates.iter().zip(&pairs).zip(&grades) {
        out.write(&LabelLine {
            query_id: &q.id,
            query: &q.text,
            doc_id: &hit.id,
            bm25_rank: hit.rank,
            bm25_score: hit.score,
            grade: g.grade,
            expected: g.expected,
            distribution: &g.distribution,
            truncated: e.truncated,
            model: &model,
            checkpoint: &checkpoint,
            prompt_version: GRADE_PROMPT_VERSION,
        })?;
        labelfleet_types::push_qrels_line(
            &mut qrels,
            &format!("{}/{}", q.id, hit.id),
            &q.id,
            &hit.id,
            g.grade,
        )?;
    }
    out.finish()?;
    if let Some(path) = &a.qrels {
        std::fs::write(path, qrels).with_context(|| path.display().to_string())?;
    }
    let graded: Vec<usize> = grades.iter().map(|g| g.grade).collect();
    eprintln!(
        "{}",
        progress::grading_summary(
            &model,
            &[
                ("device", placement.describe()),
                ("queries", queries.len().to_string()),
            ],
            &graded,
            grader.num_grades(),
            rejected,
            secs,
        )
    );
    if rejected > 0 {
        return Err(Rejected(rejected).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_from_tsv_and_jsonl_with_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("q.tsv");
        std::fs::write(&tsv, "1\tboundary layer\n\n2\tshock waves\n").unwrap();
        let q = read_queries(&tsv).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(
            q[1],
            Query {
                id: "2".into(),
                text: "shock waves".into()
            }
        );

        let jl = dir.path().join("q.jsonl");
        std::fs::write(
            &jl,
            "{\"id\": 7, \"query\": \"flutter\"}\n{\"query_id\": \"b\", \"query\": \"heat\"}\n",
        )
        .unwrap();
        let q = read_queries(&jl).unwrap();
        assert_eq!(q[0].id, "7");
        assert_eq!(q[1].text, "heat");

        std::fs::write(&jl, "{\"id\": \"a\", \"query\": \"x\"}\n{\"id\": \"b\"}\n").unwrap();
        let e = read_queries(&jl).unwrap_err().to_string();
        assert!(e.contains(":2: record b: field `query`"), "{e}");

        std::fs::write(&tsv, "1\tx\n1\ty\n").unwrap();
        let e = read_queries(&tsv).unwrap_err().to_string();
        assert!(
            e.contains(":2: record 1: field `id`: duplicate of line 1"),
            "{e}"
        );

        std::fs::write(&tsv, "1 no tab\n").unwrap();
        let e = read_queries(&tsv).unwrap_err().to_string();
        assert!(e.contains(":1: expected `qid<TAB>text`"), "{e}");
    }
}
