//! `labelfleet eval`: agreement of one or more labelers with human judgments (TREC qrels), with
//! query-bootstrap confidence intervals, the paired comparison of each labeler with a baseline
//! (a non-inferiority verdict per measure), an optional PNG figure, and the cost per million
//! labels when throughputs and prices are given.

use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_eval::{
    compare_paired, cost_per_million, labeler_report, plot, Agreement, BootstrapConfig, Cost,
    CostRatio, Judgment, LabelerReport, Measure, MeasureCi, PairedComparison, Pricing, Verdict,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// Human judgments, TREC qrels: `qid 0 docid grade`.
    #[arg(long)]
    qrels: PathBuf,
    /// Labels to score: TREC qrels, or JSONL with `query_id` (or `query`), `doc_id`, `grade` and
    /// optionally `expected` (the score that orders documents within a query). Repeat for
    /// several labelers; each is compared with the baseline (the first, or --baseline).
    #[arg(long, required = true)]
    labels: Vec<PathBuf>,
    /// Name of a labeler, in the order of --labels (default: the file's stem).
    #[arg(long = "name")]
    names: Vec<String>,
    /// The labeler the others are compared with: its name, or its index among --labels
    /// (0 = the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Grades on the scale (0..levels-1); human grades above are clipped to the top grade.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    /// Score labeled pairs the humans did not judge as grade 0 (the pooling rule); otherwise
    /// they are left out.
    #[arg(long)]
    unjudged_as_zero: bool,
    /// Non-inferiority margin: a labeler is on par with the baseline on a measure when the 95%
    /// interval of its difference lies above -margin.
    #[arg(long, default_value_t = 0.05)]
    margin: f64,
    /// Bootstrap resamples (of queries, with replacement).
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
    /// Seed of the bootstrap; the same seed gives the same intervals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measured throughput of a labeler, `NAME=PAIRS_PER_S` (repeatable): prints hours and
    /// USD per million labels.
    #[arg(long = "pairs-per-s", value_name = "NAME=RATE")]
    pairs_per_s: Vec<String>,
    /// Price of the machine a labeler runs on, USD per hour: `X` for every labeler, or
    /// `NAME=X` for one (repeatable; a named price wins).
    #[arg(long = "price-per-hour", value_name = "[NAME=]USD")]
    price_per_hour: Vec<String>,
    /// Write everything as JSON here: the baseline's measures at the top level (as with one
    /// labeler), then every labeler's measures, intervals, confusion matrix, calibration and
    /// cost, and the comparisons.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the figure (confusion heatmaps, calibration, measures with intervals) to this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

type Key = (String, String);

/// One line of a qrels or labels file.
struct Entry {
    grade: usize,
    score: f64,
    line: usize,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| path.display().to_string())
}

fn parse_qrels(path: &Path, text: &str) -> Result<Vec<(Key, Entry)>> {
    let mut out = vec![];
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
        out.push((
            (q.to_string(), d.to_string()),
            Entry {
                grade: g,
                score: g as f64,
                line: n + 1,
            },
        ));
    }
    Ok(out)
}

/// Human judgments; a pair judged twice keeps its last grade.
fn read_human(path: &Path) -> Result<BTreeMap<Key, usize>> {
    let text = read_text(path)?;
    Ok(parse_qrels(path, &text)?
        .into_iter()
        .map(|(k, e)| (k, e.grade))
        .collect())
}

/// A labeler's labels, TREC qrels or JSONL; a pair labeled twice is an error.
fn read_labels(path: &Path) -> Result<BTreeMap<Key, Entry>> {
    let text = read_text(path)?;
    let entries = if text.trim_start().starts_with('{') {
        parse_jsonl(path, &text)?
    } else {
        parse_qrels(path, &text)?
    };
    let mut out: BTreeMap<Key, Entry> = BTreeMap::new();
    for (key, e) in entries {
        if let Some(first) = out.get(&key) {
            bail!(
                "{}:{}: pair ({}, {}) is already labeled on line {}",
                path.display(),
                e.line,
                key.0,
                key.1,
                first.line
            );
        }
        out.insert(key, e);
    }
    Ok(out)
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<(Key, Entry)>> {
    let mut out = vec![];
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
        let score = match v.get("expected") {
            None | Some(serde_json::Value::Null) => g as f64,
            Some(e) => e
                .as_f64()
                .with_context(|| format!("{}: field `expected`: not a number", at()))?,
        };
        out.push((
            (q, d),
            Entry {
                grade: g as usize,
                score,
                line: n + 1,
            },
        ));
    }
    Ok(out)
}

/// One labeler's labels joined with the human judgments.
struct Labeler {
    name: String,
    file: PathBuf,
    judgments: Vec<Judgment>,
    /// Labeled pairs the humans did not judge.
    unjudged: usize,
    /// Judged pairs, of queries this labeler labeled, that it did not label.
    unlabeled: usize,
}

fn join(
    name: String,
    file: &Path,
    human: &BTreeMap<Key, usize>,
    levels: usize,
    unjudged_as_zero: bool,
) -> Result<Labeler> {
    let labels = read_labels(file)?;
    let top = levels.saturating_sub(1);
    let mut judgments = vec![];
    let mut unjudged = 0usize;
    for ((q, d), e) in &labels {
        if e.grade > top {
            bail!(
                "{}:{}: field `grade`: label for ({q}, {d}) has grade {}, outside 0..{top}",
                file.display(),
                e.line,
                e.grade
            );
        }
        let h = match human.get(&(q.clone(), d.clone())) {
            Some(h) => (*h).min(top),
            None => {
                unjudged += 1;
                if !unjudged_as_zero {
                    continue;
                }
                0
            }
        };
        judgments.push(Judgment {
            query: q.clone(),
            doc: d.clone(),
            human: h,
            predicted: e.grade,
            score: e.score,
        });
    }
    let labeled_queries: HashSet<&String> = labels.keys().map(|(q, _)| q).collect();
    let unlabeled = human
        .keys()
        .filter(|(q, d)| {
            labeled_queries.contains(q) && !labels.contains_key(&(q.clone(), d.clone()))
        })
        .count();
    Ok(Labeler {
        name,
        file: file.to_path_buf(),
        judgments,
        unjudged,
        unlabeled,
    })
}

/// Names in the order of --labels: --name where given, else the file stem.
fn labeler_names(a: &EvalArgs) -> Result<Vec<String>> {
    if a.names.len() > a.labels.len() {
        bail!(
            "{} --name for {} --labels: give at most one name per labels file",
            a.names.len(),
            a.labels.len()
        );
    }
    let names: Vec<String> = a
        .labels
        .iter()
        .enumerate()
        .map(|(i, path)| match a.names.get(i) {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("labeler {i}")),
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            bail!("two labelers are named `{n}`: tell them apart with --name");
        }
    }
    Ok(names)
}

fn baseline_index(a: &EvalArgs, names: &[String]) -> Result<usize> {
    let Some(b) = &a.baseline else { return Ok(0) };
    if let Some(i) = names.iter().position(|n| n == b) {
        return Ok(i);
    }
    match b.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        _ => bail!(
            "--baseline `{b}`: no labeler of that name or index (labelers: {})",
            names.join(", ")
        ),
    }
}

/// `NAME=VALUE` options, or a bare `VALUE` where `bare` is allowed (key "").
fn named_values(
    flag: &str,
    values: &[String],
    names: &[String],
    bare: bool,
) -> Result<HashMap<String, f64>> {
    let mut out = HashMap::new();
    for v in values {
        let (name, number) = match v.rsplit_once('=') {
            Some((n, x)) => (n.to_string(), x),
            None if bare => (String::new(), v.as_str()),
            None => bail!("--{flag} `{v}`: expected NAME=VALUE"),
        };
        if !name.is_empty() && !names.contains(&name) {
            bail!(
                "--{flag} `{v}`: no labeler named `{name}` (labelers: {})",
                names.join(", ")
            );
        }
        let x: f64 = number
            .trim()
            .parse()
            .with_context(|| format!("--{flag} `{v}`: `{number}` is not a number"))?;
        out.insert(name, x);
    }
    Ok(out)
}

/// One labeler's throughput and cost per million labels, as far as the options give them.
#[derive(Serialize)]
struct CostEntry {
    pairs_per_s: f64,
    hours_per_million: f64,
    /// Absent without a price.
    cost: Option<Cost>,
}

fn costs(a: &EvalArgs, names: &[String]) -> Result<Vec<Option<CostEntry>>> {
    let rates = named_values("pairs-per-s", &a.pairs_per_s, names, false)?;
    let prices = named_values("price-per-hour", &a.price_per_hour, names, true)?;
    names
        .iter()
        .map(|n| {
            let Some(&rate) = rates.get(n) else {
                return Ok(None);
            };
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("--pairs-per-s {n}={rate}: the throughput must be a positive number");
            }
            let price = prices.get(n).or_else(|| prices.get(""));
            let cost = match price {
                Some(&usd_per_hour) => Some(
                    cost_per_million(rate, &Pricing::PerHour { usd_per_hour })
                        .with_context(|| format!("cost of {n}"))?,
                ),
                None => None,
            };
            Ok(Some(CostEntry {
                pairs_per_s: rate,
                hours_per_million: 1e6 / rate / 3600.0,
                cost,
            }))
        })
        .collect()
}

#[derive(Serialize)]
struct LabelerJson<'a> {
    file: String,
    /// Labeled pairs the humans did not judge (scored as 0 or left out, see
    /// `unjudged_as_zero`).
    unjudged: usize,
    /// Judged pairs of labeled queries with no label.
    unlabeled: usize,
    #[serde(flatten)]
    report: &'a LabelerReport,
    throughput: Option<&'a CostEntry>,
}

#[derive(Serialize)]
struct ComparisonJson<'a> {
    baseline: &'a str,
    labeler: &'a str,
    /// Pairs only one of the two labeled, left out of the comparison.
    pairs_only_baseline: usize,
    pairs_only_labeler: usize,
    #[serde(flatten)]
    comparison: &'a PairedComparison,
    /// `speedup`: the labeler's throughput over the baseline's; `cheaper`: the baseline's cost
    /// over the labeler's.
    cost_ratio: Option<CostRatio>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    /// The baseline's measures, at the top level as with a single labeler.
    #[serde(flatten)]
    baseline_agreement: &'a Agreement,
    qrels: String,
    levels: usize,
    unjudged_as_zero: bool,
    baseline: &'a str,
    bootstrap: BootstrapConfig,
    labelers: Vec<LabelerJson<'a>>,
    comparisons: Vec<ComparisonJson<'a>>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let names = labeler_names(&a)?;
    let base = baseline_index(&a, &names)?;
    let costs = costs(&a, &names)?;
    let cfg = BootstrapConfig {
        resamples: a.resamples,
        seed: a.seed,
        confidence: 0.95,
        margin: a.margin,
    };
    let human = read_human(&a.qrels)?;
    let mut labelers = vec![];
    for (name, file) in names.iter().zip(&a.labels) {
        let l = join(name.clone(), file, &human, a.levels, a.unjudged_as_zero)?;
        let prefix = if names.len() > 1 {
            format!("{name}: ")
        } else {
            String::new()
        };
        eprintln!(
            "{prefix}{} pairs compared; {} labeled pairs not judged by humans were {}; {} judged pairs of labeled queries have no label",
            l.judgments.len(),
            l.unjudged,
            if a.unjudged_as_zero { "scored as grade 0" } else { "left out (see --unjudged-as-zero)" },
            l.unlabeled,
        );
        labelers.push(l);
    }
    let reports = labelers
        .iter()
        .map(|l| {
            labeler_report(&l.name, &l.judgments, a.levels, &cfg)
                .with_context(|| format!("labeler {} ({})", l.name, l.file.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    print_measures(&reports, &costs, &cfg);
    print_costs(&names, &costs, base);

    let mut comparisons = vec![];
    for (i, l) in labelers.iter().enumerate() {
        if i == base {
            continue;
        }
        let b = &labelers[base];
        let (pool_a, pool_b, only_a, only_b) = common_pool(&b.judgments, &l.judgments);
        if pool_a.is_empty() {
            bail!(
                "{} and {} share no judged pair: nothing to compare",
                b.name,
                l.name
            );
        }
        if only_a + only_b > 0 {
            eprintln!(
                "{} vs {}: compared on the {} pairs both labeled ({only_a} only {}, {only_b} only {})",
                l.name,
                b.name,
                pool_a.len(),
                b.name,
                l.name
            );
        }
        let cmp = compare_paired(&pool_a, &pool_b, a.levels, &cfg)
            .with_context(|| format!("{} vs {}", l.name, b.name))?;
        print_comparison(&b.name, &l.name, &cmp);
        let ratio = match (&costs[base], &costs[i]) {
            (Some(x), Some(y)) => match (&x.cost, &y.cost) {
                (Some(cx), Some(cy)) => Some(CostRatio::of(cx, cy)),
                _ => None,
            },
            _ => None,
        };
        comparisons.push((i, only_a, only_b, cmp, ratio));
    }
    println!();
    for r in &reports {
        print_confusion(r, a.levels, names.len() > 1);
    }

    if let Some(p) = &a.plot {
        let title = format!(
            "Agreement with the human judgments of {}",
            a.qrels
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        plot::render_png(p, &title, &reports)?;
        eprintln!("figure written to {}", p.display());
    }
    if let Some(p) = &a.json {
        let json = ReportJson {
            baseline_agreement: &reports[base].cis.agreement,
            qrels: a.qrels.display().to_string(),
            levels: a.levels,
            unjudged_as_zero: a.unjudged_as_zero,
            baseline: &names[base],
            bootstrap: cfg,
            labelers: labelers
                .iter()
                .zip(&reports)
                .zip(&costs)
                .map(|((l, r), c)| LabelerJson {
                    file: l.file.display().to_string(),
                    unjudged: l.unjudged,
                    unlabeled: l.unlabeled,
                    report: r,
                    throughput: c.as_ref(),
                })
                .collect(),
            comparisons: comparisons
                .iter()
                .map(|(i, only_a, only_b, cmp, ratio)| ComparisonJson {
                    baseline: &names[base],
                    labeler: &names[*i],
                    pairs_only_baseline: *only_a,
                    pairs_only_labeler: *only_b,
                    comparison: cmp,
                    cost_ratio: *ratio,
                })
                .collect(),
        };
        std::fs::write(p, serde_json::to_string_pretty(&json)?)
            .with_context(|| p.display().to_string())?;
    }
    Ok(())
}

/// The judgments of `a` and of `b` on the pairs both labeled, in the same order, and how many
/// pairs only `a`, only `b` labeled.
fn common_pool(a: &[Judgment], b: &[Judgment]) -> (Vec<Judgment>, Vec<Judgment>, usize, usize) {
    let key = |j: &Judgment| (j.query.clone(), j.doc.clone());
    let b_by_key: HashMap<Key, &Judgment> = b.iter().map(|j| (key(j), j)).collect();
    let (mut pa, mut pb) = (vec![], vec![]);
    for j in a {
        if let Some(other) = b_by_key.get(&key(j)) {
            pa.push(j.clone());
            pb.push((*other).clone());
        }
    }
    let (only_a, only_b) = (a.len() - pa.len(), b.len() - pb.len());
    (pa, pb, only_a, only_b)
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{x:.3}")
    }
}

fn with_ci(m: &MeasureCi) -> String {
    if m.value.is_nan() {
        return "-".into();
    }
    if m.ci.used == 0 {
        return format!("{:.3} [-]", m.value);
    }
    format!("{:.3} [{:.3}, {:.3}]", m.value, m.ci.lo, m.ci.hi)
}

fn print_measures(reports: &[LabelerReport], costs: &[Option<CostEntry>], cfg: &BootstrapConfig) {
    let mut header = vec!["measure (95% CI)".to_string()];
    header.extend(reports.iter().map(|r| r.name.clone()));
    let mut rows = vec![];
    let row = |label: &str, cell: &dyn Fn(usize) -> String| {
        std::iter::once(label.to_string())
            .chain((0..reports.len()).map(cell))
            .collect::<Vec<String>>()
    };
    rows.push(row("pairs", &|i| {
        reports[i].cis.agreement.pairs.to_string()
    }));
    rows.push(row("queries", &|i| {
        reports[i].cis.agreement.queries.to_string()
    }));
    for m in Measure::ALL {
        rows.push(row(m.label(), &|i| with_ci(reports[i].cis.get(m))));
    }
    if costs.iter().any(Option::is_some) {
        let cost_cell = |i: usize, f: &dyn Fn(&CostEntry) -> String| {
            costs[i].as_ref().map(f).unwrap_or_else(|| "-".into())
        };
        rows.push(row("pairs/s", &|i| {
            cost_cell(i, &|c| format!("{:.2}", c.pairs_per_s))
        }));
        rows.push(row("hours / M labels", &|i| {
            cost_cell(i, &|c| format!("{:.1}", c.hours_per_million))
        }));
        rows.push(row("USD / M labels", &|i| {
            cost_cell(i, &|c| {
                c.cost
                    .map(|c| format!("{:.2}", c.usd_per_million))
                    .unwrap_or_else(|| "- (no --price-per-hour)".into())
            })
        }));
    }
    println!(
        "{}",
        progress::table(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows)
    );
    println!(
        "95% percentile intervals over {} resamples of the queries (seed {})",
        cfg.resamples, cfg.seed
    );
    for r in reports {
        for m in &r.cis.measures {
            if !m.value.is_nan() && m.ci.used < cfg.resamples {
                println!(
                    "  {} of {}: interval over the {} of {} resamples that define it",
                    m.measure.label(),
                    r.name,
                    m.ci.used,
                    cfg.resamples
                );
            }
        }
    }
}

fn print_costs(names: &[String], costs: &[Option<CostEntry>], base: usize) {
    let Some(Some(b)) = costs.get(base) else {
        return;
    };
    for (i, c) in costs.iter().enumerate() {
        let Some(c) = c.as_ref().filter(|_| i != base) else {
            continue;
        };
        let mut line = format!(
            "{}: {:.1}x the throughput of {}",
            names[i],
            c.pairs_per_s / b.pairs_per_s,
            names[base]
        );
        if let (Some(cb), Some(ci)) = (&b.cost, &c.cost) {
            let r = CostRatio::of(cb, ci);
            line.push_str(&format!(", {:.1}x cheaper per label", r.cheaper));
        }
        println!("{line}");
    }
}

fn print_comparison(base: &str, name: &str, cmp: &PairedComparison) {
    let margin = cmp.config.margin;
    println!(
        "\n{name} vs {base} (baseline), paired on {} pairs of {} queries: difference {name} − {base}, 95% CI, margin {margin}",
        cmp.pairs, cmp.queries
    );
    let header = [
        "measure",
        base,
        name,
        &format!("{name} − {base} [95% CI]"),
        "verdict",
    ];
    let rows = cmp
        .measures
        .iter()
        .map(|m| {
            let diff = if m.ci.used == 0 {
                format!("{:+.3} [-]", m.diff)
            } else {
                format!("{:+.3} [{:+.3}, {:+.3}]", m.diff, m.ci.lo, m.ci.hi)
            };
            vec![
                m.measure.label().to_string(),
                num(m.a),
                num(m.b),
                diff,
                m.verdict.describe(name, margin),
            ]
        })
        .collect();
    println!("{}", progress::table(&header, rows));
    let held = cmp
        .measures
        .iter()
        .filter(|m| matches!(m.verdict, Verdict::Better | Verdict::OnPar))
        .count();
    let label_of = |v: Verdict| {
        cmp.measures
            .iter()
            .filter(|m| m.verdict == v)
            .map(|m| m.measure.label())
            .collect::<Vec<_>>()
    };
    let mut summary = format!(
        "verdict: {name} agrees with the human judges at least as well as {base} (non-inferior at margin {margin}) on {held} of {} measures",
        cmp.measures.len()
    );
    for (v, what) in [
        (Verdict::Worse, "worse"),
        (Verdict::Inconclusive, "inconclusive"),
        (Verdict::Undefined, "undefined"),
    ] {
        let l = label_of(v);
        if !l.is_empty() {
            summary.push_str(&format!("; {what}: {}", l.join(", ")));
        }
    }
    println!("{summary}");
}

fn print_confusion(r: &LabelerReport, levels: usize, named: bool) {
    let corner = if named {
        format!("{}: human \\ label", r.name)
    } else {
        "human \\ label".to_string()
    };
    let mut header = vec![corner];
    header.extend((0..levels).map(|g| g.to_string()));
    let rows = r
        .cis
        .agreement
        .confusion
        .iter()
        .enumerate()
        .map(|(h, row)| {
            std::iter::once(h.to_string())
                .chain(row.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect();
    println!(
        "{}",
        progress::table(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows)
    );
}
