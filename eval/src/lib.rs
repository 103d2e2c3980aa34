//! Agreement between a labeler's relevance grades and human judgments, with the measures the
//! relevance-labeling literature reports: accuracy, Cohen's kappa (unweighted, linear and
//! quadratic-weighted), Krippendorff's alpha (ordinal), pairwise accuracy of the ranking within
//! each query, NDCG@k of the labeler's ranking against the human grades, and the confusion matrix.

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

/// Cohen's kappa: `1 - sum(w * observed) / sum(w * expected)`, expected from the marginals.
pub fn cohen_kappa(
    human: &[usize],
    predicted: &[usize],
    levels: usize,
    weights: KappaWeights,
) -> f64 {
    let m = confusion(human, predicted, levels);
    let n = human.len() as f64;
    let rows: Vec<f64> = m.iter().map(|r| r.iter().sum::<usize>() as f64).collect();
    let cols: Vec<f64> = (0..levels)
        .map(|j| m.iter().map(|r| r[j]).sum::<usize>() as f64)
        .collect();
    let span = (levels.max(2) - 1) as f64;
    let w = |i: usize, j: usize| -> f64 {
        let d = (i as f64 - j as f64).abs();
        match weights {
            KappaWeights::Unweighted => (i != j) as u8 as f64,
            KappaWeights::Linear => d / span,
            KappaWeights::Quadratic => (d / span).powi(2),
        }
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..levels {
        for j in 0..levels {
            observed += w(i, j) * m[i][j] as f64;
            expected += w(i, j) * rows[i] * cols[j] / n;
        }
    }
    if expected == 0.0 {
        return if observed == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - observed / expected
}

/// Krippendorff's alpha with the ordinal metric, for two raters and no missing values.
pub fn krippendorff_alpha_ordinal(human: &[usize], predicted: &[usize], levels: usize) -> f64 {
    // coincidence matrix: each unit contributes both ordered pairs of its two values
    let mut o = vec![vec![0.0f64; levels]; levels];
    for (&a, &b) in human.iter().zip(predicted) {
        o[a][b] += 1.0;
        o[b][a] += 1.0;
    }
    let nc: Vec<f64> = o.iter().map(|r| r.iter().sum()).collect();
    let n: f64 = nc.iter().sum();
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
            d_o += o[c][k] * d;
            d_e += nc[c] * nc[k] * d;
        }
    }
    if d_e == 0.0 {
        return 1.0;
    }
    1.0 - (n - 1.0) * d_o / d_e
}

fn by_query(judgments: &[Judgment]) -> BTreeMap<&str, Vec<&Judgment>> {
    let mut m: BTreeMap<&str, Vec<&Judgment>> = BTreeMap::new();
    for j in judgments {
        m.entry(j.query.as_str()).or_default().push(j);
    }
    m
}

/// Within each query, over document pairs the humans graded differently: the share the
/// labeler's scores order the same way (a tie counts one half).
pub fn pairwise_accuracy(judgments: &[Judgment]) -> f64 {
    let (mut agree, mut total) = (0.0, 0usize);
    for docs in by_query(judgments).values() {
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
    }
    if total == 0 {
        return f64::NAN;
    }
    agree / total as f64
}

/// Mean over queries of NDCG@k of the ranking by the labeler's score, with the human grades as
/// gains (linear gain, log2 discount, as trec_eval and scikit-learn). Queries with no relevant
/// document are skipped.
pub fn ndcg_at(judgments: &[Judgment], k: usize) -> f64 {
    let dcg = |gains: &[f64]| {
        gains
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, g)| g / (i as f64 + 2.0).log2())
            .sum::<f64>()
    };
    let mut values = vec![];
    for docs in by_query(judgments).values() {
        let mut ranked: Vec<&&Judgment> = docs.iter().collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        let gains: Vec<f64> = ranked.iter().map(|j| j.human as f64).collect();
        let mut ideal = gains.clone();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg = dcg(&ideal);
        if idcg > 0.0 {
            values.push(dcg(&gains) / idcg);
        }
    }
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Every measure at once, on a `levels`-point scale.
pub fn agreement(judgments: &[Judgment], levels: usize) -> Result<Agreement, EvalError> {
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
