//! Agreement between a labeler's relevance grades and human judgments, with the measures the
//! relevance-labeling literature reports: accuracy, Cohen's kappa (unweighted, linear and
//! quadratic-weighted), Krippendorff's alpha (ordinal), pairwise accuracy of the ranking within
//! each query, NDCG@k of the labeler's ranking against the human grades, and the confusion matrix.
//!
//! - [`bootstrap`]: percentile confidence intervals by resampling queries, for one labeler, and
//!   the paired comparison of two labelers on the same pool with a non-inferiority verdict.
//! - [`plot`]: one PNG figure per report (confusion heatmaps, calibration, measures with CIs).
//! - [`cost`]: hours and USD per million labels from a measured throughput and a price.

pub mod bootstrap;
pub mod cost;
pub mod plot;

pub use bootstrap::{
    bootstrap_agreement, compare_paired, labeler_report, AgreementCis, BootstrapConfig, Interval,
    LabelerReport, MeasureCi, MeasureDiff, PairedComparison, Verdict,
};
pub use cost::{cost_per_million, Cost, CostRatio, Pricing};

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("no judgments to compare")]
    Empty,
    #[error("judgment {index}: grade {grade} outside the scale 0..{levels}")]
    OutOfScale {
        index: usize,
        grade: usize,
        levels: usize,
    },
    #[error("pair ({query}, {doc}) appears more than once in {labeler}'s judgments")]
    DuplicatePair {
        labeler: &'static str,
        query: String,
        doc: String,
    },
    #[error("the two labelers judged different pools: ({query}, {doc}) is judged by {only} only")]
    PoolMismatch {
        query: String,
        doc: String,
        only: &'static str,
    },
    #[error("pair ({query}, {doc}): human grade {a} for labeler A but {b} for labeler B")]
    HumanMismatch {
        query: String,
        doc: String,
        a: usize,
        b: usize,
    },
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// One judged pair: the human grade, the labeler's grade and its score (expected grade), which
/// orders documents within a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgment {
    pub query: String,
    pub doc: String,
    pub human: usize,
    pub predicted: usize,
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KappaWeights {
    Unweighted,
    Linear,
    Quadratic,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub pairs: usize,
    pub queries: usize,
    pub accuracy: f64,
    pub cohen_kappa: f64,
    pub linear_kappa: f64,
    pub quadratic_kappa: f64,
    pub krippendorff_alpha: f64,
    pub pairwise_accuracy: f64,
    pub ndcg_at_10: f64,
    /// `confusion[human][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// The scalar measures of an [`Agreement`], in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Accuracy,
    CohenKappa,
    LinearKappa,
    QuadraticKappa,
    KrippendorffAlpha,
    PairwiseAccuracy,
    NdcgAt10,
}

impl Measure {
    pub const ALL: [Measure; 7] = [
        Measure::Accuracy,
        Measure::CohenKappa,
        Measure::LinearKappa,
        Measure::QuadraticKappa,
        Measure::KrippendorffAlpha,
        Measure::PairwiseAccuracy,
        Measure::NdcgAt10,
    ];

    /// A short name for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Measure::Accuracy => "accuracy",
            Measure::CohenKappa => "kappa",
            Measure::LinearKappa => "linear kappa",
            Measure::QuadraticKappa => "QW kappa",
            Measure::KrippendorffAlpha => "alpha (ord.)",
            Measure::PairwiseAccuracy => "pairwise acc.",
            Measure::NdcgAt10 => "NDCG@10",
        }
    }

    /// The measure's value in `a` (NaN where it is undefined, as in [`agreement`]).
    pub fn of(self, a: &Agreement) -> f64 {
        match self {
            Measure::Accuracy => a.accuracy,
            Measure::CohenKappa => a.cohen_kappa,
            Measure::LinearKappa => a.linear_kappa,
            Measure::QuadraticKappa => a.quadratic_kappa,
            Measure::KrippendorffAlpha => a.krippendorff_alpha,
            Measure::PairwiseAccuracy => a.pairwise_accuracy,
            Measure::NdcgAt10 => a.ndcg_at_10,
        }
    }
}

/// `m[human][predicted]` counts over a `levels`-point scale.
pub fn confusion(human: &[usize], predicted: &[usize], levels: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; levels]; levels];
    for (&h, &p) in human.iter().zip(predicted) {
        m[h][p] += 1;
    }
    m
}

pub fn accuracy(human: &[usize], predicted: &[usize]) -> f64 {
    let same = human.iter().zip(predicted).filter(|(h, p)| h == p).count();
    same as f64 / human.len().max(1) as f64
}

/// Flat `levels x levels` counts, `counts[human * levels + predicted]`.
pub(crate) fn flat_confusion(human: &[usize], predicted: &[usize], levels: usize) -> Vec<f64> {
    let mut m = vec![0.0; levels * levels];
    for (&h, &p) in human.iter().zip(predicted) {
        m[h * levels + p] += 1.0;
    }
    m
}

/// The disagreement weight of each cell, flat as in [`flat_confusion`].
pub(crate) fn kappa_weights(levels: usize, weights: KappaWeights) -> Vec<f64> {
    let span = (levels.max(2) - 1) as f64;
    let mut w = vec![0.0; levels * levels];
    for i in 0..levels {
        for j in 0..levels {
            let d = (i as f64 - j as f64).abs();
            w[i * levels + j] = match weights {
                KappaWeights::Unweighted => (i != j) as u8 as f64,
                KappaWeights::Linear => d / span,
                KappaWeights::Quadratic => (d / span).powi(2),
            };
        }
    }
    w
}

/// Cohen's kappa of flat counts with flat weights; `None` where it is undefined (no pairs, or
/// marginals that leave no expected disagreement, as when both raters use one grade).
pub(crate) fn kappa_of_counts(counts: &[f64], weights: &[f64], levels: usize) -> Option<f64> {
    let mut rows = vec![0.0; levels];
    let mut cols = vec![0.0; levels];
    for i in 0..levels {
        for j in 0..levels {
            let c = counts[i * levels + j];
            rows[i] += c;
            cols[j] += c;
        }
    }
    let n: f64 = rows.iter().sum();
    if n == 0.0 {
        return None;
    }
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..levels {
        for j in 0..levels {
            let w = weights[i * levels + j];
            observed += w * counts[i * levels + j];
            expected += w * rows[i] * cols[j] / n;
        }
    }
    if expected == 0.0 {
        return None;
    }
    Some(1.0 - observed / expected)
}

/// Cohen's kappa: `1 - sum(w * observed) / sum(w * expected)`, expected from the marginals.
/// Where it is undefined (no expected disagreement, so no observed one either) it is 1.
pub fn cohen_kappa(
    human: &[usize],
    predicted: &[usize],
    levels: usize,
    weights: KappaWeights,
) -> f64 {
    if human.is_empty() {
        return f64::NAN;
    }
    let counts = flat_confusion(human, predicted, levels);
    kappa_of_counts(&counts, &kappa_weights(levels, weights), levels).unwrap_or(1.0)
}

/// Ordinal Krippendorff's alpha of flat confusion counts (two raters, no missing values);
/// `None` where it is undefined (fewer than two values, or every value in one grade).
pub(crate) fn alpha_of_counts(counts: &[f64], levels: usize) -> Option<f64> {
    // coincidence matrix: each unit contributes both ordered pairs of its two values
    let mut nc = vec![0.0f64; levels];
    for a in 0..levels {
        for b in 0..levels {
            let c = counts[a * levels + b];
            nc[a] += c;
            nc[b] += c;
        }
    }
    let n: f64 = nc.iter().sum();
    if n <= 1.0 {
        return None;
    }
    let delta2 = |c: usize, k: usize| -> f64 {
        if c == k {
            return 0.0;
        }
        let (lo, hi) = (c.min(k), c.max(k));
        let between: f64 = nc[lo..=hi].iter().sum();
        (between - (nc[c] + nc[k]) / 2.0).powi(2)
    };
    let (mut d_o, mut d_e) = (0.0, 0.0);
    for c in 0..levels {
        for k in 0..levels {
            let d = delta2(c, k);
            let o = counts[c * levels + k] + counts[k * levels + c];
            d_o += o * d;
            d_e += nc[c] * nc[k] * d;
        }
    }
    if d_e == 0.0 {
        return None;
    }
    Some(1.0 - (n - 1.0) * d_o / d_e)
}

/// Krippendorff's alpha with the ordinal metric, for two raters and no missing values. Where it
/// is undefined (every value in one grade) it is 1.
pub fn krippendorff_alpha_ordinal(human: &[usize], predicted: &[usize], levels: usize) -> f64 {
    alpha_of_counts(&flat_confusion(human, predicted, levels), levels).unwrap_or(1.0)
}

pub(crate) fn by_query(judgments: &[Judgment]) -> BTreeMap<&str, Vec<&Judgment>> {
    let mut m: BTreeMap<&str, Vec<&Judgment>> = BTreeMap::new();
    for j in judgments {
        m.entry(j.query.as_str()).or_default().push(j);
    }
    m
}

/// One query's pairwise agreement: (agreeing pairs, tie = 1/2; pairs the humans graded
/// differently).
pub(crate) fn pairwise_of_query(docs: &[&Judgment]) -> (f64, usize) {
    let (mut agree, mut total) = (0.0, 0usize);
    for (i, a) in docs.iter().enumerate() {
        for b in &docs[i + 1..] {
            if a.human == b.human {
                continue;
            }
            total += 1;
            let human = (a.human as f64 - b.human as f64).signum();
            let model = a.score - b.score;
            agree += if model == 0.0 {
                0.5
            } else if model.signum() == human {
                1.0
            } else {
                0.0
            };
        }
    }
    (agree, total)
}

/// Within each query, over document pairs the humans graded differently: the share the
/// labeler's scores order the same way (a tie counts one half).
pub fn pairwise_accuracy(judgments: &[Judgment]) -> f64 {
    let (mut agree, mut total) = (0.0, 0usize);
    for docs in by_query(judgments).values() {
        let (a, t) = pairwise_of_query(docs);
        agree += a;
        total += t;
    }
    if total == 0 {
        return f64::NAN;
    }
    agree / total as f64
}

/// One query's NDCG@k (ties in score broken by document id); `None` when the query has no
/// relevant document.
pub(crate) fn ndcg_of_query(docs: &[&Judgment], k: usize) -> Option<f64> {
    let dcg = |gains: &[f64]| {
        gains
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, g)| g / (i as f64 + 2.0).log2())
            .sum::<f64>()
    };
    let mut ranked: Vec<&Judgment> = docs.to_vec();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    let gains: Vec<f64> = ranked.iter().map(|j| j.human as f64).collect();
    let mut ideal = gains.clone();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg = dcg(&ideal);
    (idcg > 0.0).then(|| dcg(&gains) / idcg)
}

/// Mean over queries of NDCG@k of the ranking by the labeler's score, with the human grades as
/// gains (linear gain, log2 discount, as trec_eval and scikit-learn). Queries with no relevant
/// document are skipped.
pub fn ndcg_at(judgments: &[Judgment], k: usize) -> f64 {
    let values: Vec<f64> = by_query(judgments)
        .values()
        .filter_map(|docs| ndcg_of_query(docs, k))
        .collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// How the labeler's score (its expected grade) lines up with each human grade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationPoint {
    pub human: usize,
    /// Judged pairs with this human grade.
    pub pairs: usize,
    /// Mean labeler score over them (NaN when `pairs` is 0).
    pub mean_score: f64,
    /// Mean labeler grade over them (NaN when `pairs` is 0).
    pub mean_grade: f64,
}

/// The mean labeler score and grade for each human grade `0..levels` (a calibrated labeler
/// lies on the diagonal). Grades are assumed checked against `levels`, as [`agreement`] does.
pub fn calibration(judgments: &[Judgment], levels: usize) -> Vec<CalibrationPoint> {
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); levels];
    for j in judgments.iter().filter(|j| j.human < levels) {
        let s = &mut sums[j.human];
        s.0 += 1;
        s.1 += j.score;
        s.2 += j.predicted as f64;
    }
    sums.into_iter()
        .enumerate()
        .map(|(human, (pairs, score, grade))| CalibrationPoint {
            human,
            pairs,
            mean_score: if pairs == 0 {
                f64::NAN
            } else {
                score / pairs as f64
            },
            mean_grade: if pairs == 0 {
                f64::NAN
            } else {
                grade / pairs as f64
            },
        })
        .collect()
}

/// Checks that every grade lies on the `levels`-point scale.
pub(crate) fn check_scale(judgments: &[Judgment], levels: usize) -> Result<(), EvalError> {
    if judgments.is_empty() {
        return Err(EvalError::Empty);
    }
    for (index, j) in judgments.iter().enumerate() {
        for grade in [j.human, j.predicted] {
            if grade >= levels {
                return Err(EvalError::OutOfScale {
                    index,
                    grade,
                    levels,
                });
            }
        }
    }
    Ok(())
}

/// Every measure at once, on a `levels`-point scale.
pub fn agreement(judgments: &[Judgment], levels: usize) -> Result<Agreement, EvalError> {
    check_scale(judgments, levels)?;
    let h: Vec<usize> = judgments.iter().map(|j| j.human).collect();
    let p: Vec<usize> = judgments.iter().map(|j| j.predicted).collect();
    Ok(Agreement {
        pairs: judgments.len(),
        queries: by_query(judgments).len(),
        accuracy: accuracy(&h, &p),
        cohen_kappa: cohen_kappa(&h, &p, levels, KappaWeights::Unweighted),
        linear_kappa: cohen_kappa(&h, &p, levels, KappaWeights::Linear),
        quadratic_kappa: cohen_kappa(&h, &p, levels, KappaWeights::Quadratic),
        krippendorff_alpha: krippendorff_alpha_ordinal(&h, &p, levels),
        pairwise_accuracy: pairwise_accuracy(judgments),
        ndcg_at_10: ndcg_at(judgments, 10),
        confusion: confusion(&h, &p, levels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_agreement() {
        let h = vec![0, 1, 2, 3, 0, 1, 2, 3];
        assert_eq!(accuracy(&h, &h), 1.0);
        assert!((cohen_kappa(&h, &h, 4, KappaWeights::Quadratic) - 1.0).abs() < 1e-12);
        assert!((krippendorff_alpha_ordinal(&h, &h, 4) - 1.0).abs() < 1e-12);
        let inv: Vec<usize> = h.iter().map(|g| 3 - g).collect();
        assert!(cohen_kappa(&h, &inv, 4, KappaWeights::Quadratic) < -0.9);
        assert!(krippendorff_alpha_ordinal(&h, &inv, 4) < 0.0);
    }

    #[test]
    fn ranking_measures_follow_the_scores() {
        let j = |q: &str, d: &str, human: usize, score: f64| Judgment {
            query: q.into(),
            doc: d.into(),
            human,
            predicted: 0,
            score,
        };
        let good = vec![
            j("q", "a", 3, 0.9),
            j("q", "b", 1, 0.5),
            j("q", "c", 0, 0.1),
        ];
        assert_eq!(pairwise_accuracy(&good), 1.0);
        assert!((ndcg_at(&good, 10) - 1.0).abs() < 1e-12);
        let bad = vec![
            j("q", "a", 3, 0.1),
            j("q", "b", 1, 0.5),
            j("q", "c", 0, 0.9),
        ];
        assert_eq!(pairwise_accuracy(&bad), 0.0);
        assert!(ndcg_at(&bad, 10) < 0.6);
        let tied = vec![j("q", "a", 3, 0.5), j("q", "b", 0, 0.5)];
        assert_eq!(pairwise_accuracy(&tied), 0.5);
    }

    #[test]
    fn out_of_scale_grades_are_named() {
        let j = Judgment {
            query: "q".into(),
            doc: "d".into(),
            human: 4,
            predicted: 0,
            score: 0.0,
        };
        assert_eq!(
            agreement(&[j], 4).unwrap_err(),
            EvalError::OutOfScale {
                index: 0,
                grade: 4,
                levels: 4
            }
        );
        assert_eq!(agreement(&[], 4).unwrap_err(), EvalError::Empty);
    }
}
