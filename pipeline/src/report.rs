//! The pipeline's agreement report: each labeler against the human judgments with 95%
//! confidence intervals (query bootstrap), the student against its teacher with a
//! non-inferiority verdict per measure, throughput and cost per million labels, and a PNG
//! figure (confusion matrices, calibration, measures with intervals).

use crate::{progress, Result};

use labelfleet_eval::{
    compare_paired, cost_per_million, labeler_report, plot, BootstrapConfig, Judgment,
    LabelerReport, Measure, Pricing, Verdict,
};
use std::path::Path;

/// Grades on the scale the pipeline uses (0-3).
const LEVELS: usize = 4;

/// One labeler's judgments of the evaluation pool.
pub struct Row {
    pub name: String,
    pub judgments: Vec<Judgment>,
    /// Measured throughput (None: not a model, or never measured).
    pub pairs_per_s: Option<f64>,
    /// Whether it outputs grades; BM25 only ranks, so only its ranking measures apply.
    pub graded: bool,
}

fn f3(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.3}")
    }
}

/// Prints the tables, writes the figure to `png`, and returns everything as JSON for
/// `report.json`. The teacher is the first graded row, the student the second.
pub fn agreement_report(
    rows: &[Row],
    price_per_hour: Option<f64>,
    png: &Path,
    seed: u64,
) -> Result<serde_json::Value> {
    use std::fmt::Write;
    // the tables, printed here and kept in the report for a client that ran remotely
    let mut text = String::new();
    if rows.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let cfg = BootstrapConfig {
        seed,
        ..Default::default()
    };
    let reports: Vec<LabelerReport> = rows
        .iter()
        .map(|r| labeler_report(&r.name, &r.judgments, LEVELS, &cfg))
        .collect::<std::result::Result<_, _>>()?;
    let graded: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].graded).collect();
    let teacher_rate = graded.first().and_then(|&i| rows[i].pairs_per_s);
    let pricing = Pricing::PerHour {
        usd_per_hour: price_per_hour.unwrap_or(0.0),
    };

    // one column per labeler, one row per measure: fits a 100-column terminal
    let mut measures = vec![
        "pairs",
        "accuracy",
        "kappa",
        "QW kappa",
        "alpha (ord.)",
        "pairwise acc.",
        "NDCG@10",
        "pairs/s",
        "vs teacher",
        "hours / 1M labels",
    ];
    if price_per_hour.is_some() {
        measures.push("USD / 1M labels");
    }
    let mut columns = vec![];
    let mut labelers = vec![];
    for (row, rep) in rows.iter().zip(&reports) {
        let cell = |m: Measure| {
            let c = rep.cis.get(m);
            if !row.graded && !matches!(m, Measure::PairwiseAccuracy | Measure::NdcgAt10) {
                "-".to_string()
            } else {
                format!("{} [{}, {}]", f3(c.value), f3(c.ci.lo), f3(c.ci.hi))
            }
        };
        let cost = row
            .pairs_per_s
            .map(|r| cost_per_million(r, &pricing))
            .transpose()?;
        let mut line = vec![
            rep.cis.agreement.pairs.to_string(),
            cell(Measure::Accuracy),
            cell(Measure::CohenKappa),
            cell(Measure::QuadraticKappa),
            cell(Measure::KrippendorffAlpha),
            cell(Measure::PairwiseAccuracy),
            cell(Measure::NdcgAt10),
            row.pairs_per_s
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
            match (row.pairs_per_s, teacher_rate) {
                (Some(r), Some(t)) if row.graded => format!("{:.1}x", r / t),
                _ => "-".into(),
            },
            cost.map(|c| format!("{:.1}", c.hours_per_million))
                .unwrap_or_else(|| "-".into()),
        ];
        if price_per_hour.is_some() {
            line.push(
                cost.map(|c| format!("{:.2}", c.usd_per_million))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        columns.push(line);
        labelers.push(serde_json::json!({
            "report": rep, "pairs_per_s": row.pairs_per_s, "cost_per_million": cost,
        }));
    }
    let mut header = vec!["measure"];
    header.extend(rows.iter().map(|r| r.name.as_str()));
    let table: Vec<Vec<String>> = measures
        .iter()
        .enumerate()
        .map(|(i, m)| {
            std::iter::once(m.to_string())
                .chain(columns.iter().map(|c| c[i].clone()))
                .collect()
        })
        .collect();
    let _ = writeln!(
        text,
        "\nAgreement with human judgments (grades 0-3; 95% CI over {} query resamples; BM25 only ranks, so only its ranking measures apply)\n{}",
        cfg.resamples,
        progress::table(&header, table)
    );

    let mut comparison = serde_json::Value::Null;
    if let [t, s, ..] = graded[..] {
        let cmp = compare_paired(&rows[t].judgments, &rows[s].judgments, LEVELS, &cfg)?;
        let lines = cmp
            .measures
            .iter()
            .map(|m| {
                vec![
                    m.measure.label().to_string(),
                    f3(m.a),
                    f3(m.b),
                    format!("{:+.3} [{:+.3}, {:+.3}]", m.diff, m.ci.lo, m.ci.hi),
                    m.verdict.describe("student", cfg.margin),
                ]
            })
            .collect();
        let _ = writeln!(
        text,
            "\nStudent against teacher on the same {} pairs ({} queries): difference student - teacher, paired query bootstrap\n{}",
            cmp.pairs,
            cmp.queries,
            progress::table(&["measure", "teacher", "student", "difference [95% CI]", "verdict"], lines)
        );
        let at_least = cmp
            .measures
            .iter()
            .filter(|m| matches!(m.verdict, Verdict::Better | Verdict::OnPar))
            .count();
        let speed = match (rows[s].pairs_per_s, teacher_rate) {
            (Some(r), Some(t)) => format!(", at {:.1}x its throughput", r / t),
            _ => String::new(),
        };
        let _ = writeln!(
        text,
            "The student agrees with the human judges at least as well as its teacher (better, or non-inferior at margin {}) on {at_least} of {} measures{speed}.",
            cfg.margin,
            cmp.measures.len()
        );
        comparison = serde_json::to_value(&cmp)?;
    }
    // the figure shows the labelers that grade: a ranker's constant "grade" would read as
    // agreement in the confusion matrices and bars (its ranking measures are in the table)
    let figure: Vec<LabelerReport> = graded.iter().map(|&i| reports[i].clone()).collect();
    plot::render_png(
        png,
        "Agreement with human judgments (evaluation pool)",
        &figure,
    )?;
    let _ = writeln!(
        text,
        "figure: {}",
        png.file_name().unwrap_or_default().to_string_lossy()
    );
    print!("{text}");
    Ok(serde_json::json!({
        "labelers": labelers, "student_vs_teacher": comparison, "tables": text,
    }))
}
