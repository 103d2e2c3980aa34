//! Distillation: fit a grader to a teacher's grade distributions (soft labels).
//!
//! Loss is the cross-entropy between the teacher distribution and the student's softmax over
//! the grades (equal to KL up to the teacher's entropy). AdamW, global-norm gradient clipping,
//! linear warm-up then linear decay.

use crate::error::{Result, SlmError};
use crate::grading::{plan_batches, EncodedPair, Grader};
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
    /// Share of pairs whose most likely grade equals the target's.
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

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |x| x.0)
}

fn expected_grade(p: &[f32]) -> f64 {
    p.iter()
        .enumerate()
        .map(|(i, x)| i as f64 * *x as f64)
        .sum()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
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
        let p = softmax(row);
        loss_sum -= ex
            .target
            .iter()
            .zip(&p)
            .map(|(t, q)| *t as f64 * (*q as f64).max(f64::MIN_POSITIVE).ln())
            .sum::<f64>();
        if argmax(&p) == argmax(&ex.target) {
            agree += 1;
        }
        mae += (expected_grade(&p) - expected_grade(&ex.target)).abs();
    }
    let n = examples.len() as f64;
    Ok(EvalReport {
        loss: loss_sum / n,
        agreement: agree as f64 / n,
        expected_grade_mae: mae / n,
        pairs: examples.len(),
    })
}

/// How calibration moved a student's grades on the held-out pairs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GradeCalibration {
    /// Added to each grade's logit (grade 0's stays 0).
    pub shift: Vec<f32>,
    /// How often each grade is the teacher's most likely one on the held-out pairs ...
    pub teacher_counts: Vec<usize>,
    /// ... the student's before calibration ...
    pub before: Vec<usize>,
    /// ... and after.
    pub after: Vec<usize>,
}

/// Below this many held-out pairs the grade counts are too coarse to calibrate on.
pub const MIN_CALIBRATION_PAIRS: usize = 20;

/// Calibrates the student's most likely grade against its teacher's, on held-out pairs (the
/// teacher's labels only). A student fitted to soft labels whose mass sits mostly on grade 0
/// orders pairs well but keeps grade 0 as its most likely grade everywhere, so its grades say
/// nothing. A shift of each grade's logit (label-shift correction, folded into the head's
/// bias) makes each grade the student's most likely one about as often as it is the teacher's.
/// Within a grade the order of pairs is kept; the expected grades move with the shift.
/// Returns `None`, changing nothing, for a grader without a grade bias or too few pairs.
pub fn calibrate_grades(
    grader: &dyn Grader,
    heldout: &[Example],
    token_budget: usize,
) -> Result<Option<GradeCalibration>> {
    let Some(bias) = grader.grade_bias() else {
        return Ok(None);
    };
    if heldout.len() < MIN_CALIBRATION_PAIRS {
        return Ok(None);
    }
    let g = grader.num_grades();
    let logits = logits_of(grader, heldout, token_budget)?;
    let mut teacher_counts = vec![0usize; g];
    heldout
        .iter()
        .for_each(|e| teacher_counts[argmax(&e.target).min(g - 1)] += 1);
    let before = grade_counts(&logits, &vec![0.0; g]);
    let shift = fit_grade_shift(&logits, &teacher_counts);
    let after = grade_counts(&logits, &shift);
    let delta = Tensor::from_slice(&shift)
        .to_kind(bias.kind())
        .to_device(bias.device());
    tch::no_grad(|| {
        let _ = bias.shallow_clone().g_add_(&delta);
    });
    Ok(Some(GradeCalibration {
        shift,
        teacher_counts,
        before,
        after,
    }))
}

/// How often each grade is the most likely one once `shift` is added to the logits.
fn grade_counts(logits: &[Vec<f32>], shift: &[f32]) -> Vec<usize> {
    let mut counts = vec![0usize; shift.len()];
    for row in logits {
        let shifted: Vec<f32> = row.iter().zip(shift).map(|(l, s)| l + s).collect();
        counts[argmax(&shifted)] += 1;
    }
    counts
}

/// The logit shift (grade 0's fixed at 0) under which each grade is the most likely one about
/// as often as `target` says. Coordinate sweeps: each grade's shift in turn is set so that
/// exactly its target count of rows prefer it, given the other shifts (a row prefers grade k
/// once k's shift passes the row's threshold, so the rows with the lowest thresholds, those
/// that favour k most, are the ones that take it). The shift whose counts came closest (L1) is
/// kept. Deterministic.
pub fn fit_grade_shift(logits: &[Vec<f32>], target: &[usize]) -> Vec<f32> {
    const SWEEPS: usize = 50;
    let g = target.len();
    let distance = |shift: &[f32]| -> usize {
        let counts = grade_counts(logits, shift);
        counts.iter().zip(target).map(|(a, b)| a.abs_diff(*b)).sum()
    };
    let mut shift = vec![0.0f32; g];
    let mut best = (distance(&shift), shift.clone());
    if logits.is_empty() {
        return shift;
    }
    for _ in 0..SWEEPS {
        for k in 1..g {
            // the shift grade k needs to become a row's most likely grade
            let mut thresholds: Vec<f32> = logits
                .iter()
                .map(|row| {
                    let rival = (0..g)
                        .filter(|&j| j != k)
                        .map(|j| row[j] + shift[j])
                        .fold(f32::NEG_INFINITY, f32::max);
                    rival - row[k]
                })
                .collect();
            thresholds.sort_by(f32::total_cmp);
            let n = thresholds.len();
            shift[k] = match target[k] {
                0 => thresholds[0] - 1.0,
                c if c >= n => thresholds[n - 1] + 1.0,
                c => (thresholds[c - 1] + thresholds[c]) / 2.0,
            };
        }
        let d = distance(&shift);
        if d < best.0 {
            best = (d, shift.clone());
        }
        if d == 0 {
            break;
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_shift_matches_the_target_counts() {
        // 100 rows of an ordinal model whose grade 0 is always the most likely: the higher a
        // row's score x, the less grades 1 and 2 trail
        let logits: Vec<Vec<f32>> = (0..100)
            .map(|i| {
                let x = i as f32 / 100.0;
                vec![0.0, 2.0 * x - 2.5, 4.0 * x - 5.5]
            })
            .collect();
        assert_eq!(grade_counts(&logits, &[0.0; 3]), [100, 0, 0]);
        let target = [60, 25, 15];
        let shift = fit_grade_shift(&logits, &target);
        assert_eq!(shift[0], 0.0);
        let counts = grade_counts(&logits, &shift);
        let off: usize = counts.iter().zip(target).map(|(a, b)| a.abs_diff(b)).sum();
        assert!(off <= 4, "counts {counts:?} against {target:?}");
        // the order is kept: the highest scores get grade 2, the lowest grade 0
        assert_eq!(grade_counts(&logits[88..], &shift), [0, 0, 12]);
        assert_eq!(grade_counts(&logits[..55], &shift), [55, 0, 0]);
    }

    #[test]
    fn grade_shift_of_rows_that_cannot_be_told_apart_is_the_closest_it_can_be() {
        let logits = vec![vec![0.5, 0.1]; 10];
        let shift = fit_grade_shift(&logits, &[5, 5]);
        let counts = grade_counts(&logits, &shift);
        assert!(counts == [10, 0] || counts == [0, 10], "{counts:?}");
        assert!(fit_grade_shift(&[], &[0, 0]).iter().all(|s| *s == 0.0));
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
