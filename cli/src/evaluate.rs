//! `labelfleet eval`: agreement of a labels file with human judgments (TREC qrels).

use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_eval::{agreement, Agreement, Judgment};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// Human judgments, TREC qrels: `qid 0 docid grade`.
    #[arg(long)]
    qrels: PathBuf,
    /// Labels to score: TREC qrels, or JSONL with `query_id` (or `query`), `doc_id`, `grade` and
    /// optionally `expected` (the score that orders documents within a query).
    #[arg(long)]
    labels: PathBuf,
    /// Grades on the scale (0..levels-1); human grades above are clipped to the top grade.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    /// Score labeled pairs the humans did not judge as grade 0 (the pooling rule); otherwise
    /// they are left out.
    #[arg(long)]
    unjudged_as_zero: bool,
    /// Write the measures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

type Key = (String, String);

fn read_qrels(path: &Path) -> Result<BTreeMap<Key, (usize, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let [q, _, d, g] = f[..] else {
            bail!(
                "{}:{}: expected `qid 0 docid grade`, got {} fields",
                path.display(),
                n + 1,
                f.len()
            )
        };
        let g: i64 = g.parse().with_context(|| {
            format!(
                "{}:{}: grade `{g}` is not an integer",
                path.display(),
                n + 1
            )
        })?;
        let g = g.max(0) as usize;
        out.insert((q.to_string(), d.to_string()), (g, g as f64));
    }
    Ok(out)
}

fn read_labels(path: &Path) -> Result<BTreeMap<Key, (usize, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    if !text.trim_start().starts_with('{') {
        return read_qrels(path);
    }
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let field = |names: &[&str]| names.iter().find_map(|k| v.get(*k)).cloned();
        let text_of = |x: serde_json::Value| match x {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let q = field(&["query_id", "query"])
            .and_then(text_of)
            .with_context(|| format!("{}: field `query_id`: missing", at()))?;
        let d = field(&["doc_id"])
            .and_then(text_of)
            .with_context(|| format!("{}: field `doc_id`: missing", at()))?;
        let g = v.get("grade").and_then(|g| g.as_u64()).with_context(|| {
            format!(
                "{}: field `grade`: missing or not a non-negative integer",
                at()
            )
        })?;
        let score = v
            .get("expected")
            .and_then(|e| e.as_f64())
            .unwrap_or(g as f64);
        out.insert((q, d), (g as usize, score));
    }
    Ok(out)
}

pub fn run(a: EvalArgs) -> Result<()> {
    let human = read_qrels(&a.qrels)?;
    let labels = read_labels(&a.labels)?;
    let top = a.levels.saturating_sub(1);
    let mut judgments = vec![];
    let (mut unjudged, mut unlabeled) = (0usize, 0usize);
    for ((q, d), (g, score)) in &labels {
        if *g > top {
            bail!(
                "{}: label for ({q}, {d}) has grade {g}, outside 0..{top}",
                a.labels.display()
            );
        }
        let h = match human.get(&(q.clone(), d.clone())) {
            Some((h, _)) => (*h).min(top),
            None => {
                unjudged += 1;
                if !a.unjudged_as_zero {
                    continue;
                }
                0
            }
        };
        judgments.push(Judgment {
            query: q.clone(),
            doc: d.clone(),
            human: h,
            predicted: *g,
            score: *score,
        });
    }
    let labeled_queries: std::collections::HashSet<&String> =
        labels.keys().map(|(q, _)| q).collect();
    for (q, d) in human.keys() {
        if labeled_queries.contains(q) && !labels.contains_key(&(q.clone(), d.clone())) {
            unlabeled += 1;
        }
    }
    let agr = agreement(&judgments, a.levels)?;
    print_agreement(&agr, a.levels);
    eprintln!(
        "{} pairs compared; {unjudged} labeled pairs not judged by humans were {}; {unlabeled} judged pairs of labeled queries have no label",
        judgments.len(),
        if a.unjudged_as_zero { "scored as grade 0" } else { "left out (see --unjudged-as-zero)" }
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&agr)?)
            .with_context(|| p.display().to_string())?;
    }
    Ok(())
}

fn print_agreement(a: &Agreement, levels: usize) {
    let f = |x: f64| {
        if x.is_nan() {
            "-".to_string()
        } else {
            format!("{x:.3}")
        }
    };
    println!(
        "{}",
        progress::table(
            &[
                "pairs",
                "queries",
                "accuracy",
                "kappa",
                "linear kappa",
                "QW kappa",
                "alpha (ord.)",
                "pairwise acc.",
                "NDCG@10"
            ],
            vec![vec![
                a.pairs.to_string(),
                a.queries.to_string(),
                f(a.accuracy),
                f(a.cohen_kappa),
                f(a.linear_kappa),
                f(a.quadratic_kappa),
                f(a.krippendorff_alpha),
                f(a.pairwise_accuracy),
                f(a.ndcg_at_10),
            ]],
        )
    );
    let mut header = vec!["human \\ label".to_string()];
    header.extend((0..levels).map(|g| g.to_string()));
    let rows = a
        .confusion
        .iter()
        .enumerate()
        .map(|(h, r)| {
            std::iter::once(h.to_string())
                .chain(r.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect();
    println!(
        "{}",
        progress::table(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows)
    );
}
