//! A committee teacher's rules, checked where a job is accepted and again where a task runs:
//! what a judge must say, and how the judges' distributions become one.

use labelfleet_proto::v1::{judge, Committee};
use std::collections::HashSet;

/// Most judges in one committee (each grades every pair).
pub const MAX_JUDGES: usize = 8;
/// Deepest feedback a similarity judge may ask for.
pub const MAX_FEEDBACK_DEPTH: u32 = 1_000;
/// The grade scale a committee grades on: its similarity judges' calibration has four grades.
pub const COMMITTEE_GRADES: usize = 4;

/// Checks a committee; the error names the field under `field` (e.g. `spec.teacher.committee`).
pub fn check(field: &str, c: &Committee) -> Result<(), String> {
    if c.judges.is_empty() {
        return Err(format!(
            "{field}.judges: a committee needs at least one judge"
        ));
    }
    if c.judges.len() > MAX_JUDGES {
        return Err(format!(
            "{field}.judges: {} judges, over the limit of {MAX_JUDGES}",
            c.judges.len()
        ));
    }
    let mut names = HashSet::new();
    for (i, j) in c.judges.iter().enumerate() {
        let at = format!("{field}.judges[{i}]");
        if j.name.trim().is_empty() {
            return Err(format!("{at}.name: empty"));
        }
        if !names.insert(j.name.as_str()) {
            return Err(format!("{at}.name: `{}` names two judges", j.name));
        }
        if !(j.weight.is_finite() && j.weight > 0.0) {
            return Err(format!(
                "{at}.weight: {} must be a positive number",
                j.weight
            ));
        }
        match &j.kind {
            None => return Err(format!("{at}: no kind (similarity or local_path)")),
            Some(judge::Kind::LocalPath(p)) if p.trim().is_empty() => {
                return Err(format!("{at}.local_path: empty"))
            }
            Some(judge::Kind::LocalPath(_)) => {}
            Some(judge::Kind::Similarity(s)) => {
                if s.encoder.trim().is_empty() {
                    return Err(format!("{at}.similarity.encoder: empty"));
                }
                if s.corpus_id.trim().is_empty() {
                    return Err(format!(
                        "{at}.similarity.corpus_id: empty (the judge reads an uploaded corpus)"
                    ));
                }
                if s.feedback_depth > MAX_FEEDBACK_DEPTH {
                    return Err(format!(
                        "{at}.similarity.feedback_depth: {} is over the limit of \
                         {MAX_FEEDBACK_DEPTH}",
                        s.feedback_depth
                    ));
                }
                if !(s.feedback_weight.is_finite() && s.feedback_weight >= 0.0) {
                    return Err(format!(
                        "{at}.similarity.feedback_weight: {} must be a number, 0 or more",
                        s.feedback_weight
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The weighted mean of the judges' distributions (a linear opinion pool, as UMBRELA-style
/// ensembles average their judges). Every distribution has the same grades; `None` when there
/// are none or they differ in length.
pub fn pool(distributions: &[&[f32]], weights: &[f64]) -> Option<Vec<f32>> {
    let n = distributions.first()?.len();
    if distributions.len() != weights.len() || distributions.iter().any(|d| d.len() != n) {
        return None;
    }
    let total: f64 = weights.iter().sum();
    Some(
        (0..n)
            .map(|g| {
                let sum: f64 = distributions
                    .iter()
                    .zip(weights)
                    .map(|(d, w)| d[g] as f64 * w)
                    .sum();
                (sum / total) as f32
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::{Judge, SimilarityJudge};

    fn similarity(name: &str, weight: f64) -> Judge {
        Judge {
            name: name.into(),
            weight,
            kind: Some(judge::Kind::Similarity(SimilarityJudge {
                encoder: "minilm".into(),
                corpus_id: "c".into(),
                feedback_depth: 5,
                feedback_weight: 1.0,
            })),
        }
    }

    #[test]
    fn a_good_committee_passes_and_each_fault_is_named() {
        let good = Committee {
            judges: vec![
                similarity("similarity", 1.0),
                Judge {
                    name: "decoder".into(),
                    weight: 0.5,
                    kind: Some(judge::Kind::LocalPath("smollm2".into())),
                },
            ],
        };
        check("spec.teacher.committee", &good).unwrap();
        let cases: Vec<(Committee, &str)> = vec![
            (
                Committee { judges: vec![] },
                "spec.teacher.committee.judges: ",
            ),
            (
                Committee {
                    judges: vec![similarity("a", 1.0), similarity("a", 1.0)],
                },
                "judges[1].name: `a` names two judges",
            ),
            (
                Committee {
                    judges: vec![similarity("a", 0.0)],
                },
                "judges[0].weight",
            ),
            (
                Committee {
                    judges: vec![similarity("a", f64::NAN)],
                },
                "judges[0].weight",
            ),
            (
                Committee {
                    judges: vec![Judge {
                        name: "a".into(),
                        weight: 1.0,
                        kind: None,
                    }],
                },
                "judges[0]: no kind",
            ),
            (
                Committee {
                    judges: vec![Judge {
                        name: "a".into(),
                        weight: 1.0,
                        kind: Some(judge::Kind::Similarity(SimilarityJudge {
                            encoder: "minilm".into(),
                            corpus_id: String::new(),
                            feedback_depth: 5,
                            feedback_weight: 1.0,
                        })),
                    }],
                },
                "judges[0].similarity.corpus_id",
            ),
            (
                Committee {
                    judges: (0..9).map(|i| similarity(&i.to_string(), 1.0)).collect(),
                },
                "over the limit of 8",
            ),
        ];
        for (c, want) in cases {
            let e = check("spec.teacher.committee", &c).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn the_pool_is_the_weighted_mean() {
        let a = [1.0, 0.0, 0.0, 0.0];
        let b = [0.0, 0.0, 0.5, 0.5];
        let p = pool(&[&a, &b], &[3.0, 1.0]).unwrap();
        let want = [0.75, 0.0, 0.125, 0.125];
        assert!(
            p.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-6),
            "{p:?}"
        );
        assert_eq!(pool(&[&a], &[2.0]).unwrap(), a);
        assert!(pool(&[&a, &b[..3]], &[1.0, 1.0]).is_none());
        assert!(pool(&[], &[]).is_none());
    }
}
