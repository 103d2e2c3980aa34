//! Distillation: fit a grader to a teacher's grade distributions (soft labels).
//!
//! Loss is the cross-entropy between the teacher distribution and the student's softmax over
//! the grades (equal to KL up to the teacher's entropy). AdamW, global-norm gradient clipping,
//! linear warm-up then linear decay.

use crate::error::{Result, SlmError};
use crate::grading::{grading_for, plan_batches, EncodedPair, Grader, Grading};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use tch::{nn::OptimizerConfig, Kind, Tensor};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of steps spent warming up the learning rate.
    pub warmup_fraction: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 3,
            batch_size: 16,
            learning_rate: 5e-5,
            weight_decay: 0.01,
            warmup_fraction: 0.1,
            max_grad_norm: 1.0,
            seed: 0,
        }
    }
}

/// A training pair: its encoding and the teacher's distribution over grades.
#[derive(Debug, Clone)]
pub struct Example {
    pub input: EncodedPair,
    pub target: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub learning_rate: f64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct EvalReport {
    /// Mean soft cross-entropy against the targets.
    pub loss: f64,
    /// Share of pairs whose grade (the most likely one, or the calibrated one) equals the
    /// target's most likely grade.
    pub agreement: f64,
    /// Mean |expected grade - target expected grade|.
    pub expected_grade_mae: f64,
    pub pairs: usize,
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then linear decay to 0.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let warmup = ((total as f64) * cfg.warmup_fraction).ceil().max(1.0);
    let s = step as f64 + 1.0;
    if s <= warmup {
        cfg.learning_rate * s / warmup
    } else {
        cfg.learning_rate * ((total as f64 - s) / (total as f64 - warmup).max(1.0)).max(0.0)
    }
}

fn targets_tensor(batch: &[&Example], g: usize, device: tch::Device) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(batch.len() * g);
    for ex in batch {
        if ex.target.len() != g {
            return Err(SlmError::Argument(format!(
                "a target has {} grades, the grader has {g}",
                ex.target.len()
            )));
        }
        flat.extend_from_slice(&ex.target);
    }
    Ok(Tensor::from_slice(&flat)
        .view([batch.len() as i64, g as i64])
        .to_device(device))
}

fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    -(targets * logits.log_softmax(-1, Kind::Float))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// Trains `grader` in place. `on_step` sees every optimizer step.
pub fn train(
    grader: &dyn Grader,
    examples: &[Example],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<Vec<StepReport>> {
    train_epochs(grader, examples, cfg, on_step, &mut |_| Ok(()))
}

/// Which epoch early stopping kept, and the held-out loss after each.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EarlyStopping {
    /// 0-based; the weights are those after this epoch.
    pub best_epoch: usize,
    pub heldout_losses: Vec<f64>,
}

/// Trains `grader` in place for up to `cfg.epochs`, scoring `heldout` after every epoch, and
/// leaves it with the weights of the epoch whose held-out loss (soft cross-entropy against the
/// teacher) was lowest. The schedule is that of the full run, so the epochs it keeps are the
/// ones a shorter run would not have given.
pub fn train_with_early_stopping(
    grader: &dyn Grader,
    examples: &[Example],
    heldout: &[Example],
    cfg: &TrainConfig,
    token_budget: usize,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(Vec<StepReport>, EarlyStopping)> {
    let mut losses = vec![];
    let mut best: Option<(usize, f64, Weights)> = None;
    let reports = train_epochs(grader, examples, cfg, on_step, &mut |epoch| {
        let loss = evaluate(grader, heldout, token_budget)?.loss;
        losses.push(loss);
        if best.as_ref().is_none_or(|(_, l, _)| loss < *l) {
            best = Some((epoch, loss, snapshot(grader.var_store())));
        }
        Ok(())
    })?;
    let (best_epoch, _, weights) = best.expect("at least one epoch ran");
    restore(grader.var_store(), &weights);
    Ok((
        reports,
        EarlyStopping {
            best_epoch,
            heldout_losses: losses,
        },
    ))
}

/// A copy of a model's variables, by name.
type Weights = Vec<(String, Tensor)>;

/// A copy of every variable.
fn snapshot(vs: &tch::nn::VarStore) -> Weights {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

fn restore(vs: &tch::nn::VarStore, weights: &Weights) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, saved) in weights {
            if let Some(v) = vars.get(name) {
                v.shallow_clone().copy_(saved);
            }
        }
    });
}

/// The training loop; `on_epoch(epoch)` runs after each epoch.
fn train_epochs(
    grader: &dyn Grader,
    examples: &[Example],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&StepReport),
    on_epoch: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<StepReport>> {
    if examples.is_empty() {
        return Err(SlmError::Argument("no training examples".into()));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(SlmError::Argument(
            "batch_size and epochs must be positive".into(),
        ));
    }
    let device = grader.placement().device;
    let g = grader.num_grades();
    let mut opt = tch::nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(grader.var_store(), cfg.learning_rate)?;
    let steps_per_epoch = examples.len().div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    tch::manual_seed(cfg.seed as i64);
    let mut reports = Vec::with_capacity(total);
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch_size) {
            let batch: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
            let inputs: Vec<&EncodedPair> = batch.iter().map(|e| &e.input).collect();
            let lr = learning_rate(cfg, step, total);
            opt.set_lr(lr);
            let logits = grader.grade_logits(&inputs, true)?;
            let loss = soft_cross_entropy(&logits, &targets_tensor(&batch, g, device)?);
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(cfg.max_grad_norm);
            opt.step();
            let report = StepReport {
                step,
                total_steps: total,
                epoch,
                loss: loss.double_value(&[]),
                learning_rate: lr,
            };
            on_step(&report);
            reports.push(report);
            step += 1;
        }
        on_epoch(epoch)?;
    }
    Ok(reports)
}

/// The grade logits of `examples` (no gradients), a row of `num_grades` per example, in
/// input order.
fn logits_of(
    grader: &dyn Grader,
    examples: &[Example],
    token_budget: usize,
) -> Result<Vec<Vec<f32>>> {
    let g = grader.num_grades();
    let lens: Vec<usize> = examples.iter().map(|e| e.input.ids.len()).collect();
    let mut rows = vec![vec![]; examples.len()];
    tch::no_grad(|| -> Result<()> {
        for batch in plan_batches(&lens, token_budget, 64) {
            let inputs: Vec<&EncodedPair> = batch.iter().map(|&i| &examples[i].input).collect();
            let logits = grader
                .grade_logits(&inputs, false)?
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu);
            let flat = Vec::<f32>::try_from(logits.flatten(0, -1))?;
            for (row, &i) in batch.iter().enumerate() {
                rows[i] = flat[row * g..(row + 1) * g].to_vec();
            }
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Log-probabilities of logits, in f64 (no probability underflows to a log of minus
/// infinity).
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let top = logits
        .iter()
        .map(|l| *l as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let log_sum = logits
        .iter()
        .map(|l| (*l as f64 - top).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|l| *l as f64 - top - log_sum).collect()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    log_softmax(logits).iter().map(|l| l.exp() as f32).collect()
}

/// Scores `examples` without gradients and compares with their targets.
pub fn evaluate(
    grader: &dyn Grader,
    examples: &[Example],
    token_budget: usize,
) -> Result<EvalReport> {
    if examples.is_empty() {
        return Err(SlmError::Argument("no evaluation examples".into()));
    }
    let g = grader.num_grades();
    for ex in examples {
        if ex.target.len() != g {
            return Err(SlmError::Argument(format!(
                "a target has {} grades, the grader has {g}",
                ex.target.len()
            )));
        }
    }
    let logits = logits_of(grader, examples, token_budget)?;
    let (mut loss_sum, mut agree, mut mae) = (0.0, 0usize, 0.0);
    for (row, ex) in logits.iter().zip(examples) {
        let log_p = log_softmax(row);
        loss_sum -= ex
            .target
            .iter()
            .zip(&log_p)
            .map(|(t, l)| *t as f64 * l)
            .sum::<f64>();
        let student = grading_for(grader, log_p.iter().map(|l| l.exp() as f32).collect());
        let teacher = Grading::from_distribution(ex.target.clone());
        if student.grade == teacher.grade {
            agree += 1;
        }
        mae += (student.expected as f64 - teacher.expected as f64).abs();
    }
    let n = examples.len() as f64;
    Ok(EvalReport {
        loss: loss_sum / n,
        agreement: agree as f64 / n,
        expected_grade_mae: mae / n,
        pairs: examples.len(),
    })
}

/// How the student's grades were calibrated on the held-out pairs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GradeCalibration {
    /// Where the expected grade passes into each next grade.
    pub cutpoints: Vec<f32>,
    /// How often each grade is the teacher's most likely one on the held-out pairs ...
    pub teacher_counts: Vec<usize>,
    /// ... the student's most likely one ...
    pub most_likely: Vec<usize>,
    /// ... and the student's calibrated grade.
    pub calibrated: Vec<usize>,
}

/// Below this many held-out pairs the grade counts are too coarse to calibrate on.
pub const MIN_CALIBRATION_PAIRS: usize = 20;

/// Calibrates the student's grades against its teacher's on held-out pairs (the teacher's
/// labels only). A student fitted to soft labels whose mass sits mostly on grade 0 may order
/// pairs well, but grade 0 stays its most likely grade everywhere, so its grades say nothing.
/// Calibrated, a pair's grade is the bin of its expected grade, with cutpoints placed so that
/// each grade is given about as often as it is the teacher's most likely grade there (the
/// teacher's base rates). The distributions, the expected grades and so the order of pairs
/// are the student's own. With fewer than [`MIN_CALIBRATION_PAIRS`] pairs the grader's
/// cutpoints are cleared (most likely grade) and `None` is returned.
pub fn calibrate_grades(
    grader: &mut dyn Grader,
    heldout: &[Example],
    token_budget: usize,
) -> Result<Option<GradeCalibration>> {
    grader.set_grade_cutpoints(None)?;
    if heldout.len() < MIN_CALIBRATION_PAIRS {
        return Ok(None);
    }
    let g = grader.num_grades();
    let logits = logits_of(&*grader, heldout, token_budget)?;
    let student: Vec<Grading> = logits
        .iter()
        .map(|l| Grading::from_distribution(softmax(l)))
        .collect();
    let mut teacher_counts = vec![0usize; g];
    let mut most_likely = vec![0usize; g];
    for (s, e) in student.iter().zip(heldout) {
        teacher_counts[Grading::from_distribution(e.target.clone())
            .grade
            .min(g - 1)] += 1;
        most_likely[s.grade] += 1;
    }
    let expected: Vec<f32> = student.iter().map(|s| s.expected).collect();
    let cutpoints = fit_cutpoints(&expected, &teacher_counts);
    let mut calibrated = vec![0usize; g];
    for s in student {
        calibrated[Grading::from_expected_grade(s.distribution, &cutpoints).grade] += 1;
    }
    grader.set_grade_cutpoints(Some(cutpoints.clone()))?;
    Ok(Some(GradeCalibration {
        cutpoints,
        teacher_counts,
        most_likely,
        calibrated,
    }))
}

/// Cutpoints on `scores` that put the lowest `counts[0]` scores in grade 0, the next
/// `counts[1]` in grade 1, and so on (quantile matching); each halfway between the scores it
/// separates. A grade of count 0 gets no pairs: its cutpoint equals the next one. Scores tied
/// across a boundary all go to the higher grade.
pub fn fit_cutpoints(scores: &[f32], counts: &[usize]) -> Vec<f32> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let mut cutpoints = Vec::with_capacity(counts.len().saturating_sub(1));
    let mut below = 0usize;
    for c in &counts[..counts.len().saturating_sub(1)] {
        below = (below + c).min(n);
        let cut = match below {
            0 => sorted.first().map_or(0.0, |s| s - 1.0),
            b if b >= n => sorted.last().map_or(0.0, |s| s + 1.0),
            b => (sorted[b - 1] + sorted[b]) / 2.0,
        };
        cutpoints.push(cut);
    }
    cutpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutpoints_give_each_grade_its_count_in_score_order() {
        let scores: Vec<f32> = (0..100).rev().map(|i| i as f32 / 100.0).collect();
        let cut = fit_cutpoints(&scores, &[60, 25, 0, 15]);
        let grade = |s: f32| cut.iter().take_while(|c| s >= **c).count();
        let mut counts = [0; 4];
        scores.iter().for_each(|s| counts[grade(*s)] += 1);
        assert_eq!(counts, [60, 25, 0, 15]);
        assert_eq!(grade(0.59), 0);
        assert_eq!(grade(0.60), 1);
        assert_eq!(grade(0.85), 3);
        assert!(cut.windows(2).all(|w| w[0] <= w[1]), "{cut:?}");
        // all in the top grade, or none
        assert_eq!(fit_cutpoints(&scores, &[0, 0, 0, 100]).len(), 3);
        assert!(scores
            .iter()
            .all(|s| *s >= fit_cutpoints(&scores, &[0, 0, 0, 100])[2]));
        assert!(scores
            .iter()
            .all(|s| *s < fit_cutpoints(&scores, &[100, 0, 0, 0])[0]));
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let cfg = TrainConfig {
            learning_rate: 1.0,
            warmup_fraction: 0.1,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..100).map(|s| learning_rate(&cfg, s, 100)).collect();
        assert!((lrs[9] - 1.0).abs() < 1e-9, "peak at the end of warm-up");
        assert!(lrs[0] < lrs[5] && lrs[5] < lrs[9]);
        assert!(lrs[50] < lrs[20]);
        assert!(lrs[99].abs() < 1e-9);
    }
}
