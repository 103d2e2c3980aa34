//! Confidence intervals for the agreement measures by the cluster bootstrap: a resample draws
//! as many QUERIES as the pool has, with replacement, and keeps every judged pair of each drawn
//! query. Queries, not pairs, are the unit, because the pairs of one query are not independent
//! (and pairwise accuracy and NDCG are defined within a query).
//!
//! - [`bootstrap_agreement`]: one labeler's measures with percentile intervals.
//! - [`compare_paired`]: two labelers on the same pool, resampled together, so the interval is
//!   that of the difference B − A; each measure gets a [`Verdict`] at a non-inferiority margin.
//! - [`labeler_report`]: [`bootstrap_agreement`] plus the calibration, what a report and the
//!   plot need for one labeler.
//!
//! Per-query data (confusion counts, pairwise counts, NDCG) is computed once; a resample only
//! adds up the drawn queries' numbers, so 2000 resamples of a 1000-pair pool take milliseconds.
//! The generator is SplitMix64 seeded by [`BootstrapConfig::seed`], so a seed gives the same
//! intervals on every platform and version.
//!
//! A measure undefined on a resample (kappa when both raters use one grade, NDCG when no drawn
//! query has a relevant document, ...) skips that resample; [`Interval::used`] says how many
//! resamples an interval rests on.

use crate::{
    agreement, alpha_of_counts, by_query, calibration, check_scale, kappa_of_counts, kappa_weights,
    ndcg_of_query, pairwise_of_query, Agreement, CalibrationPoint, EvalError, Judgment,
    KappaWeights, Measure,
};
use serde::Serialize;
use std::collections::HashMap;

/// How to resample and judge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapConfig {
    /// Number of resamples (default 2000).
    pub resamples: usize,
    /// Seed of the resampling; the same seed gives the same intervals.
    pub seed: u64,
    /// Coverage of the two-sided percentile interval (default 0.95).
    pub confidence: f64,
    /// Non-inferiority margin, in the measure's own units (default 0.05): B is on par with A on
    /// a measure when the interval of B − A lies above `-margin`.
    pub margin: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 2000,
            seed: 0,
            confidence: 0.95,
            margin: 0.05,
        }
    }
}

impl BootstrapConfig {
    fn check(&self) -> Result<(), EvalError> {
        if self.resamples == 0 {
            return Err(EvalError::InvalidSetting(
                "resamples must be at least 1".into(),
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(EvalError::InvalidSetting(format!(
                "confidence {} must lie strictly between 0 and 1",
                self.confidence
            )));
        }
        if !(self.margin >= 0.0 && self.margin.is_finite()) {
            return Err(EvalError::InvalidSetting(format!(
                "margin {} must be a finite number >= 0",
                self.margin
            )));
        }
        Ok(())
    }
}

/// A percentile interval over the resamples where the measure was defined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound (NaN when `used` is 0).
    pub lo: f64,
    /// Upper bound (NaN when `used` is 0).
    pub hi: f64,
    /// Resamples the interval rests on; the others left the measure undefined.
    pub used: usize,
}

/// One measure of one labeler: its value on the whole pool and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeasureCi {
    pub measure: Measure,
    pub value: f64,
    pub ci: Interval,
}

/// One labeler's measures with their intervals.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementCis {
    /// Every measure and the confusion matrix, on the whole pool.
    pub agreement: Agreement,
    /// One entry per [`Measure::ALL`], in that order.
    pub measures: Vec<MeasureCi>,
    pub config: BootstrapConfig,
}

impl AgreementCis {
    /// The entry of `measure`.
    pub fn get(&self, measure: Measure) -> &MeasureCi {
        self.measures
            .iter()
            .find(|m| m.measure == measure)
            .expect("every measure is present")
    }
}

/// What the paired interval of B − A says about B against A on one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval is above 0.
    Better,
    /// Not better, but the interval lies above `-margin`: non-inferior at that margin.
    OnPar,
    /// The interval reaches below `-margin` and lies wholly below 0.
    Worse,
    /// The interval reaches below `-margin` and above 0: the pool is too small to tell.
    Inconclusive,
    /// No resample had the measure defined for both labelers.
    Undefined,
}

impl Verdict {
    /// Judges an interval of B − A at a non-inferiority margin.
    pub fn of(ci: &Interval, margin: f64) -> Verdict {
        if ci.used == 0 || ci.lo.is_nan() || ci.hi.is_nan() {
            Verdict::Undefined
        } else if ci.lo > 0.0 {
            Verdict::Better
        } else if ci.lo > -margin {
            Verdict::OnPar
        } else if ci.hi < 0.0 {
            Verdict::Worse
        } else {
            Verdict::Inconclusive
        }
    }

    /// The verdict in words, naming labeler B: "student better", "on par (non-inferior at
    /// margin 0.05)", "student worse", "inconclusive (interval spans -0.05 and 0)".
    pub fn describe(self, b: &str, margin: f64) -> String {
        match self {
            Verdict::Better => format!("{b} better"),
            Verdict::OnPar => format!("on par (non-inferior at margin {margin})"),
            Verdict::Worse => format!("{b} worse"),
            Verdict::Inconclusive => format!("inconclusive (interval spans -{margin} and 0)"),
            Verdict::Undefined => "undefined (no resample defines it)".to_string(),
        }
    }
}

/// One measure of the paired comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeasureDiff {
    pub measure: Measure,
    /// Labeler A's value on the whole pool.
    pub a: f64,
    /// Labeler B's value on the whole pool.
    pub b: f64,
    /// `b - a`.
    pub diff: f64,
    /// Percentile interval of B − A over the paired resamples.
    pub ci: Interval,
    pub verdict: Verdict,
}

/// Labeler B against labeler A on the same judged pool.
#[derive(Debug, Clone, Serialize)]
pub struct PairedComparison {
    pub pairs: usize,
    pub queries: usize,
    /// One entry per [`Measure::ALL`], in that order.
    pub measures: Vec<MeasureDiff>,
    pub config: BootstrapConfig,
}

impl PairedComparison {
    /// The entry of `measure`.
    pub fn get(&self, measure: Measure) -> &MeasureDiff {
        self.measures
            .iter()
            .find(|m| m.measure == measure)
            .expect("every measure is present")
    }
}

/// One labeler's part of a report: its name, measures with intervals, and calibration.
#[derive(Debug, Clone, Serialize)]
pub struct LabelerReport {
    pub name: String,
    #[serde(flatten)]
    pub cis: AgreementCis,
    /// Mean labeler score and grade for each human grade.
    pub calibration: Vec<CalibrationPoint>,
    /// Whether every score lies on the grade scale `[0, levels - 1]`, so the calibration can be
    /// read against the diagonal (false for a raw ranking score such as BM25's).
    pub scores_on_grade_scale: bool,
}

/// One labeler's measures with percentile intervals over `cfg.resamples` query resamples.
///
/// Errors: no judgments, a grade off the `levels`-point scale, or an invalid `cfg`.
pub fn bootstrap_agreement(
    judgments: &[Judgment],
    levels: usize,
    cfg: &BootstrapConfig,
) -> Result<AgreementCis, EvalError> {
    cfg.check()?;
    let agreement = agreement(judgments, levels)?;
    let groups: Vec<Vec<&Judgment>> = by_query(judgments).into_values().collect();
    let prepared = Prepared::new(&groups, levels);
    let draws = resample(&[prepared], levels, cfg);
    let measures = Measure::ALL
        .iter()
        .enumerate()
        .map(|(m, &measure)| {
            let values: Vec<f64> = draws[0][m].iter().flatten().copied().collect();
            MeasureCi {
                measure,
                value: measure.of(&agreement),
                ci: percentile_interval(values, cfg.confidence),
            }
        })
        .collect();
    Ok(AgreementCis {
        agreement,
        measures,
        config: *cfg,
    })
}

/// [`bootstrap_agreement`] plus the calibration, under a display name.
pub fn labeler_report(
    name: &str,
    judgments: &[Judgment],
    levels: usize,
    cfg: &BootstrapConfig,
) -> Result<LabelerReport, EvalError> {
    let cis = bootstrap_agreement(judgments, levels, cfg)?;
    let top = levels.saturating_sub(1) as f64;
    Ok(LabelerReport {
        name: name.to_string(),
        cis,
        calibration: calibration(judgments, levels),
        scores_on_grade_scale: judgments.iter().all(|j| j.score >= 0.0 && j.score <= top),
    })
}

/// Labeler B against labeler A on the same pool of judged (query, doc) pairs: both are
/// resampled by the same query draws, and each measure gets the interval of B − A and a
/// [`Verdict`] at `cfg.margin`.
///
/// The pools must match: the same (query, doc) pairs, each once, with the same human grade
/// (the order may differ). Errors name the first pair that breaks this.
pub fn compare_paired(
    a: &[Judgment],
    b: &[Judgment],
    levels: usize,
    cfg: &BootstrapConfig,
) -> Result<PairedComparison, EvalError> {
    cfg.check()?;
    check_scale(a, levels)?;
    check_scale(b, levels)?;
    let b_aligned = align(a, b)?;
    let (agr_a, agr_b) = (agreement(a, levels)?, agreement(&b_aligned, levels)?);
    // the same query order for both: group A, and B by the same keys
    let groups_a: Vec<Vec<&Judgment>> = by_query(a).into_values().collect();
    let groups_b: Vec<Vec<&Judgment>> = by_query(&b_aligned).into_values().collect();
    let prepared = [
        Prepared::new(&groups_a, levels),
        Prepared::new(&groups_b, levels),
    ];
    let draws = resample(&prepared, levels, cfg);
    let measures = Measure::ALL
        .iter()
        .enumerate()
        .map(|(m, &measure)| {
            let diffs: Vec<f64> = draws[0][m]
                .iter()
                .zip(&draws[1][m])
                .filter_map(|(x, y)| Some((*y)? - (*x)?))
                .collect();
            let ci = percentile_interval(diffs, cfg.confidence);
            let (va, vb) = (measure.of(&agr_a), measure.of(&agr_b));
            MeasureDiff {
                measure,
                a: va,
                b: vb,
                diff: vb - va,
                ci,
                verdict: Verdict::of(&ci, cfg.margin),
            }
        })
        .collect();
    Ok(PairedComparison {
        pairs: a.len(),
        queries: groups_a.len(),
        measures,
        config: *cfg,
    })
}

/// B's judgments in the order of A's, after checking the two pools are the same.
fn align(a: &[Judgment], b: &[Judgment]) -> Result<Vec<Judgment>, EvalError> {
    let mut b_by_key: HashMap<(&str, &str), &Judgment> = HashMap::with_capacity(b.len());
    for j in b {
        if b_by_key.insert((&j.query, &j.doc), j).is_some() {
            return Err(EvalError::DuplicatePair {
                labeler: "B",
                query: j.query.clone(),
                doc: j.doc.clone(),
            });
        }
    }
    let mut seen_a = std::collections::HashSet::with_capacity(a.len());
    let mut out = Vec::with_capacity(a.len());
    for j in a {
        if !seen_a.insert((j.query.as_str(), j.doc.as_str())) {
            return Err(EvalError::DuplicatePair {
                labeler: "A",
                query: j.query.clone(),
                doc: j.doc.clone(),
            });
        }
        let Some(other) = b_by_key.get(&(j.query.as_str(), j.doc.as_str())) else {
            return Err(EvalError::PoolMismatch {
                query: j.query.clone(),
                doc: j.doc.clone(),
                only: "A",
            });
        };
        if other.human != j.human {
            return Err(EvalError::HumanMismatch {
                query: j.query.clone(),
                doc: j.doc.clone(),
                a: j.human,
                b: other.human,
            });
        }
        out.push((*other).clone());
    }
    if let Some(j) = b
        .iter()
        .find(|j| !seen_a.contains(&(j.query.as_str(), j.doc.as_str())))
    {
        return Err(EvalError::PoolMismatch {
            query: j.query.clone(),
            doc: j.doc.clone(),
            only: "B",
        });
    }
    Ok(out)
}

/// Per-query numbers of one labeler, from which any resample's measures are sums.
struct Prepared {
    /// `confusion[q * cells + human * levels + predicted]`
    confusion: Vec<f64>,
    pairwise_agree: Vec<f64>,
    pairwise_total: Vec<f64>,
    /// NaN for a query with no relevant document.
    ndcg: Vec<f64>,
}

impl Prepared {
    fn new(groups: &[Vec<&Judgment>], levels: usize) -> Prepared {
        let cells = levels * levels;
        let mut confusion = vec![0.0; groups.len() * cells];
        let (mut pairwise_agree, mut pairwise_total, mut ndcg) = (vec![], vec![], vec![]);
        for (q, docs) in groups.iter().enumerate() {
            for j in docs {
                confusion[q * cells + j.human * levels + j.predicted] += 1.0;
            }
            let (agree, total) = pairwise_of_query(docs);
            pairwise_agree.push(agree);
            pairwise_total.push(total as f64);
            ndcg.push(ndcg_of_query(docs, 10).unwrap_or(f64::NAN));
        }
        Prepared {
            confusion,
            pairwise_agree,
            pairwise_total,
            ndcg,
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast, and the same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any pool size).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// For each labeler, each measure (in [`Measure::ALL`] order), each resample: the measure's
/// value, or `None` where it is undefined. Every labeler sees the same query draws.
fn resample(
    labelers: &[Prepared],
    levels: usize,
    cfg: &BootstrapConfig,
) -> Vec<Vec<Vec<Option<f64>>>> {
    let queries = labelers[0].ndcg.len();
    let cells = levels * levels;
    let weights = [
        kappa_weights(levels, KappaWeights::Unweighted),
        kappa_weights(levels, KappaWeights::Linear),
        kappa_weights(levels, KappaWeights::Quadratic),
    ];
    let mut out = vec![vec![Vec::with_capacity(cfg.resamples); Measure::ALL.len()]; labelers.len()];
    let mut rng = SplitMix64(cfg.seed);
    let mut drawn = vec![0usize; queries];
    let mut counts = vec![0.0f64; cells];
    for _ in 0..cfg.resamples {
        for d in drawn.iter_mut() {
            *d = rng.below(queries);
        }
        for (l, p) in labelers.iter().enumerate() {
            counts.fill(0.0);
            let (mut agree, mut total, mut ndcg_sum, mut ndcg_n) = (0.0, 0.0, 0.0, 0usize);
            for &q in &drawn {
                let per_query = &p.confusion[q * cells..(q + 1) * cells];
                for (c, x) in counts.iter_mut().zip(per_query) {
                    *c += x;
                }
                agree += p.pairwise_agree[q];
                total += p.pairwise_total[q];
                if !p.ndcg[q].is_nan() {
                    ndcg_sum += p.ndcg[q];
                    ndcg_n += 1;
                }
            }
            let n: f64 = counts.iter().sum();
            let same: f64 = (0..levels).map(|g| counts[g * levels + g]).sum();
            let values = [
                (n > 0.0).then(|| same / n),
                kappa_of_counts(&counts, &weights[0], levels),
                kappa_of_counts(&counts, &weights[1], levels),
                kappa_of_counts(&counts, &weights[2], levels),
                alpha_of_counts(&counts, levels),
                (total > 0.0).then(|| agree / total),
                (ndcg_n > 0).then(|| ndcg_sum / ndcg_n as f64),
            ];
            for (m, v) in values.into_iter().enumerate() {
                out[l][m].push(v);
            }
        }
    }
    out
}

/// The two-sided percentile interval of `values` at `confidence`, with linear interpolation
/// between order statistics (numpy's default).
fn percentile_interval(mut values: Vec<f64>, confidence: f64) -> Interval {
    if values.is_empty() {
        return Interval {
            lo: f64::NAN,
            hi: f64::NAN,
            used: 0,
        };
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Interval {
        lo: quantile(&values, tail),
        hi: quantile(&values, 1.0 - tail),
        used: values.len(),
    }
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `queries` queries x `docs` documents with random human grades.
    fn pool(queries: usize, docs: usize, seed: u64) -> Vec<(String, String, usize)> {
        let mut rng = SplitMix64(seed);
        let mut out = vec![];
        for q in 0..queries {
            for d in 0..docs {
                out.push((format!("q{q}"), format!("d{d}"), rng.below(4)));
            }
        }
        out
    }

    fn label(
        pool: &[(String, String, usize)],
        grade: impl Fn(usize, usize) -> usize,
    ) -> Vec<Judgment> {
        pool.iter()
            .enumerate()
            .map(|(i, (q, d, h))| {
                let p = grade(i, *h);
                Judgment {
                    query: q.clone(),
                    doc: d.clone(),
                    human: *h,
                    predicted: p,
                    score: p as f64 + (i % 7) as f64 / 10.0,
                }
            })
            .collect()
    }

    fn random_labeler(pool: &[(String, String, usize)], seed: u64) -> Vec<Judgment> {
        let mut rng = SplitMix64(seed);
        let grades: Vec<usize> = pool.iter().map(|_| rng.below(4)).collect();
        label(pool, |i, _| grades[i])
    }

    /// Right with probability `p_right`, otherwise a random grade.
    fn noisy_labeler(pool: &[(String, String, usize)], p_right: f64, seed: u64) -> Vec<Judgment> {
        let mut rng = SplitMix64(seed);
        let grades: Vec<usize> = pool
            .iter()
            .map(|(_, _, h)| {
                if (rng.next_u64() as f64 / u64::MAX as f64) < p_right {
                    *h
                } else {
                    rng.below(4)
                }
            })
            .collect();
        label(pool, |i, _| grades[i])
    }

    #[test]
    fn identical_labelers_differ_by_exactly_zero() {
        let p = pool(30, 10, 1);
        let a = noisy_labeler(&p, 0.6, 2);
        let cmp = compare_paired(&a, &a, 4, &BootstrapConfig::default()).unwrap();
        assert_eq!(cmp.pairs, 300);
        assert_eq!(cmp.queries, 30);
        for m in &cmp.measures {
            assert_eq!(m.diff, 0.0, "{:?}", m.measure);
            assert_eq!((m.ci.lo, m.ci.hi), (0.0, 0.0), "{:?}", m.measure);
            assert_eq!(m.ci.used, 2000, "{:?}", m.measure);
            assert_eq!(m.verdict, Verdict::OnPar, "{:?}", m.measure);
        }
    }

    #[test]
    fn the_human_grades_beat_a_random_labeler_with_an_interval_above_zero() {
        let p = pool(40, 10, 3);
        let random = random_labeler(&p, 4);
        let oracle = label(&p, |_, h| h);
        let cmp = compare_paired(&random, &oracle, 4, &BootstrapConfig::default()).unwrap();
        for m in &cmp.measures {
            assert!(m.ci.lo > 0.0, "{:?}: {:?}", m.measure, m.ci);
            assert!(m.ci.lo <= m.diff && m.diff <= m.ci.hi, "{:?}", m);
            assert_eq!(m.verdict, Verdict::Better, "{:?}", m.measure);
        }
        assert!((cmp.get(Measure::Accuracy).b - 1.0).abs() < 1e-12);
        // and the other way round, B is worse
        let back = compare_paired(&oracle, &random, 4, &BootstrapConfig::default()).unwrap();
        for m in &back.measures {
            assert!(m.ci.hi < 0.0, "{:?}: {:?}", m.measure, m.ci);
            assert_eq!(m.verdict, Verdict::Worse, "{:?}", m.measure);
        }
    }

    #[test]
    fn intervals_cover_the_point_value_and_widen_when_the_pool_shrinks() {
        let big = pool(200, 8, 5);
        let small: Vec<_> = big
            .iter()
            .filter(|(q, _, _)| q.len() == 2)
            .cloned()
            .collect(); // q0..q9
        assert_eq!(small.len(), 80);
        let cfg = BootstrapConfig::default();
        let wide = bootstrap_agreement(&noisy_labeler(&small, 0.6, 6), 4, &cfg).unwrap();
        let narrow = bootstrap_agreement(&noisy_labeler(&big, 0.6, 6), 4, &cfg).unwrap();
        for m in Measure::ALL {
            let (w, n) = (wide.get(m), narrow.get(m));
            assert!(n.ci.lo <= n.value && n.value <= n.ci.hi, "{m:?}: {n:?}");
            assert!(
                w.ci.hi - w.ci.lo > 1.5 * (n.ci.hi - n.ci.lo),
                "{m:?}: 10 queries {:?}, 200 queries {:?}",
                w.ci,
                n.ci
            );
        }
        // and so does the paired interval
        let cmp = |p: &[(String, String, usize)]| {
            compare_paired(
                &noisy_labeler(p, 0.5, 7),
                &noisy_labeler(p, 0.6, 8),
                4,
                &cfg,
            )
            .unwrap()
        };
        let (w, n) = (cmp(&small), cmp(&big));
        for m in Measure::ALL {
            let (w, n) = (w.get(m).ci, n.get(m).ci);
            assert!(w.hi - w.lo > 1.5 * (n.hi - n.lo), "{m:?}: {w:?} vs {n:?}");
        }
    }

    #[test]
    fn the_seed_fixes_the_intervals() {
        let p = pool(25, 6, 9);
        let (a, b) = (noisy_labeler(&p, 0.5, 10), noisy_labeler(&p, 0.7, 11));
        let cfg = BootstrapConfig {
            seed: 42,
            ..Default::default()
        };
        let first = compare_paired(&a, &b, 4, &cfg).unwrap();
        let again = compare_paired(&a, &b, 4, &cfg).unwrap();
        assert_eq!(first.measures, again.measures);
        let other = compare_paired(&a, &b, 4, &BootstrapConfig { seed: 43, ..cfg }).unwrap();
        assert_ne!(first.measures, other.measures);
        let single = bootstrap_agreement(&a, 4, &cfg).unwrap();
        assert_eq!(
            single.measures,
            bootstrap_agreement(&a, 4, &cfg).unwrap().measures
        );
        // the order of the judgments does not matter
        let mut shuffled = a.clone();
        shuffled.reverse();
        assert_eq!(
            single.measures,
            bootstrap_agreement(&shuffled, 4, &cfg).unwrap().measures
        );
    }

    #[test]
    fn undefined_resamples_are_skipped_and_counted() {
        // one query holds every relevant document: resamples without it have no NDCG, and
        // kappa is undefined when every drawn pair is human 0 and labeled 0
        let mut judgments = vec![];
        for q in 0..6 {
            for d in 0..3 {
                let h = usize::from(q == 0 && d == 0) * 3;
                judgments.push(Judgment {
                    query: format!("q{q}"),
                    doc: format!("d{d}"),
                    human: h,
                    predicted: h,
                    score: h as f64 + d as f64 / 10.0,
                });
            }
        }
        let cis = bootstrap_agreement(&judgments, 4, &BootstrapConfig::default()).unwrap();
        // P(q0 never drawn in 6 draws) = (5/6)^6 = 0.335
        let ndcg = cis.get(Measure::NdcgAt10).ci;
        assert!(ndcg.used > 1200 && ndcg.used < 1450, "{ndcg:?}");
        assert_eq!((ndcg.lo, ndcg.hi), (1.0, 1.0));
        assert_eq!(cis.get(Measure::CohenKappa).ci.used, ndcg.used);
        assert_eq!(cis.get(Measure::Accuracy).ci.used, 2000);
    }

    #[test]
    fn mismatched_pools_are_named() {
        let p = pool(3, 2, 12);
        let a = label(&p, |_, h| h);
        let mut b = a.clone();
        b.pop();
        let cfg = BootstrapConfig::default();
        assert_eq!(
            compare_paired(&a, &b, 4, &cfg).unwrap_err(),
            EvalError::PoolMismatch {
                query: "q2".into(),
                doc: "d1".into(),
                only: "A"
            }
        );
        assert!(matches!(
            compare_paired(&b, &a, 4, &cfg).unwrap_err(),
            EvalError::PoolMismatch { only: "B", .. }
        ));
        let mut c = a.clone();
        c[0].human = (c[0].human + 1) % 4;
        assert!(matches!(
            compare_paired(&a, &c, 4, &cfg).unwrap_err(),
            EvalError::HumanMismatch { .. }
        ));
        let mut d = a.clone();
        d[1] = d[0].clone();
        assert!(matches!(
            compare_paired(&a, &d, 4, &cfg).unwrap_err(),
            EvalError::DuplicatePair { labeler: "B", .. }
        ));
        assert!(matches!(
            compare_paired(
                &a,
                &a,
                4,
                &BootstrapConfig {
                    resamples: 0,
                    ..cfg
                }
            )
            .unwrap_err(),
            EvalError::InvalidSetting(_)
        ));
    }

    #[test]
    fn verdicts_follow_the_interval_and_the_margin() {
        let ci = |lo, hi| Interval { lo, hi, used: 10 };
        assert_eq!(Verdict::of(&ci(0.01, 0.2), 0.05), Verdict::Better);
        assert_eq!(Verdict::of(&ci(-0.04, 0.2), 0.05), Verdict::OnPar);
        assert_eq!(Verdict::of(&ci(-0.04, -0.01), 0.05), Verdict::OnPar);
        assert_eq!(Verdict::of(&ci(-0.2, -0.01), 0.05), Verdict::Worse);
        assert_eq!(Verdict::of(&ci(-0.2, 0.1), 0.05), Verdict::Inconclusive);
        assert_eq!(
            Verdict::of(
                &Interval {
                    lo: f64::NAN,
                    hi: f64::NAN,
                    used: 0
                },
                0.05
            ),
            Verdict::Undefined
        );
        assert_eq!(
            Verdict::OnPar.describe("student", 0.05),
            "on par (non-inferior at margin 0.05)"
        );
        assert_eq!(Verdict::Better.describe("student", 0.05), "student better");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        let i = percentile_interval(v, 0.95);
        assert!(
            (i.lo - 2.5).abs() < 1e-9 && (i.hi - 97.5).abs() < 1e-9,
            "{i:?}"
        );
        assert_eq!(i.used, 101);
        let i = percentile_interval(vec![1.0, 2.0], 0.9);
        assert!((i.lo - 1.05).abs() < 1e-12 && (i.hi - 1.95).abs() < 1e-12);
    }

    #[test]
    fn two_thousand_resamples_of_a_thousand_pairs_are_fast() {
        let p = pool(100, 10, 13);
        let (a, b) = (noisy_labeler(&p, 0.5, 14), noisy_labeler(&p, 0.6, 15));
        let t = std::time::Instant::now();
        compare_paired(&a, &b, 4, &BootstrapConfig::default()).unwrap();
        let took = t.elapsed();
        // about 10 ms in release on one core; generous for a debug build on a shared machine
        assert!(took.as_secs_f64() < 5.0, "{took:?}");
    }
}
