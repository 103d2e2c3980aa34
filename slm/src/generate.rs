//! Batched text generation with a KV cache: greedy or temperature / top-p sampling, stop tokens.

use crate::decoder::{Attention, DecoderLm, KvCache};
use crate::error::{Result, SlmError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

/// Sampling settings are shared with the API teacher: they live in `labelfleet-types`.
pub use labelfleet_types::sampling::SamplingParams;

/// Generates a continuation for each prompt (token ids), in one batch: prompts are left-padded,
/// every row decodes until one of `stop_ids` or `max_new_tokens`. Returns the new tokens of
/// each row, without the stop token.
pub fn generate(
    lm: &DecoderLm,
    prompts: &[Vec<i64>],
    params: &SamplingParams,
    stop_ids: &[i64],
    pad_id: i64,
) -> Result<Vec<Vec<i64>>> {
    let once = vec![1; prompts.len()];
    let samples = generate_samples(lm, prompts, &once, params, stop_ids, pad_id)?;
    Ok(samples.into_iter().flatten().collect())
}

/// Draws `samples[i]` continuations of prompt `i`, each prompt read once: the prompts are
/// prefilled in one batch, then each prompt's KV cache is copied to as many rows as it has
/// samples, and all rows decode together (what several samples of one prompt cost is their
/// decoding, not another prefill). Rows are drawn in prompt order, so prompt `i`'s samples
/// are those a batch with prompt `i` repeated `samples[i]` times would draw. Returns, per
/// prompt, its samples' new tokens without the stop token.
pub fn generate_samples(
    lm: &DecoderLm,
    prompts: &[Vec<i64>],
    samples: &[usize],
    params: &SamplingParams,
    stop_ids: &[i64],
    pad_id: i64,
) -> Result<Vec<Vec<Vec<i64>>>> {
    if samples.len() != prompts.len() {
        return Err(SlmError::Argument(format!(
            "{} sample counts for {} prompts",
            samples.len(),
            prompts.len()
        )));
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(SlmError::Argument(format!("prompt {i} is empty")));
    }
    // the prompts that are sampled at all, and the prompt of each decoding row
    let read: Vec<usize> = (0..prompts.len()).filter(|&i| samples[i] > 0).collect();
    let owner: Vec<usize> = read
        .iter()
        .enumerate()
        .flat_map(|(r, &i)| std::iter::repeat_n(r, samples[i]))
        .collect();
    let mut per_prompt: Vec<Vec<Vec<i64>>> =
        samples.iter().map(|&n| Vec::with_capacity(n)).collect();
    if owner.is_empty() {
        return Ok(per_prompt);
    }
    let prompts: Vec<&Vec<i64>> = read.iter().map(|&i| &prompts[i]).collect();
    let device = lm.placement.device;
    let b = prompts.len() as i64;
    let l = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if l + params.max_new_tokens > lm.max_len {
        return Err(SlmError::Argument(format!(
            "prompt of {l} tokens plus {} new tokens exceeds max_len {}",
            params.max_new_tokens, lm.max_len
        )));
    }
    let mut flat = Vec::with_capacity(prompts.len() * l);
    let mut valid = Vec::with_capacity(prompts.len() * l);
    for p in &prompts {
        flat.extend(std::iter::repeat_n(pad_id, l - p.len()));
        flat.extend_from_slice(p);
        valid.extend(std::iter::repeat_n(false, l - p.len()));
        valid.extend(std::iter::repeat_n(true, p.len()));
    }
    let l = l as i64;
    let ids = Tensor::from_slice(&flat).view([b, l]).to_device(device);
    let mut key_valid = Tensor::from_slice(&valid).view([b, l]).to_device(device);
    let positions = (key_valid.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0);
    // Prefill mask: causal and not padding. Each position may also see itself, so a padding
    // row attends to something (an all-masked row would turn into NaN and poison the cache).
    let causal = Tensor::ones([l, l], (Kind::Bool, device)).tril(0);
    let eye = Tensor::eye(l, (Kind::Bool, device));
    let mask = causal
        .logical_and(&key_valid.view([b, 1, 1, l]))
        .logical_or(&eye)
        .view([b, 1, l, l]);
    let mut cache = KvCache::new(lm.num_layers());
    // The sampler's own generator, not libtorch's global one: engine threads (the workers of
    // an embedded cluster) and training in the same process would otherwise draw from one
    // generator and make each other's queries differ from run to run.
    let mut rng = StdRng::seed_from_u64(params.seed);
    let rows = owner.len();
    let mut out: Vec<Vec<i64>> = vec![vec![]; rows];
    tch::no_grad(|| -> Result<()> {
        let hidden = lm.forward(
            &ids,
            &Attention::Masked {
                positions: &positions,
                mask: &mask,
            },
            Some(&mut cache),
        )?;
        // one decoding row per sample: each prompt's cache, last state and position copied
        let expand = Tensor::from_slice(&owner.iter().map(|&r| r as i64).collect::<Vec<_>>())
            .to_device(device);
        cache.select_rows(&expand);
        key_valid = key_valid.index_select(0, &expand);
        let mut last_hidden = hidden.select(1, l - 1).index_select(0, &expand);
        let mut next_pos = positions.select(1, l - 1).index_select(0, &expand) + 1;
        // the rows still decoding; a finished row leaves the batch (and its cache)
        let mut active: Vec<usize> = (0..rows).collect();
        for _ in 0..params.max_new_tokens {
            let logits = lm.logits(&last_hidden).to_kind(Kind::Float);
            let next = if params.temperature <= 0.0 {
                logits.argmax(-1, false)
            } else {
                // one draw per row and step, finished or not: a row's draws do not depend on
                // when the others finish
                let draws: Vec<f32> = (0..rows).map(|_| rng.random::<f32>()).collect();
                let draws: Vec<f32> = active.iter().map(|&row| draws[row]).collect();
                let draws = Tensor::from_slice(&draws)
                    .view([active.len() as i64, 1])
                    .to_device(device);
                sample(&logits, params.temperature, params.top_p, &draws)
            };
            let next_cpu: Vec<i64> = Vec::<i64>::try_from(&next.to_device(tch::Device::Cpu))?;
            let mut keep: Vec<i64> = Vec::with_capacity(active.len());
            for (k, (&row, &tok)) in active.iter().zip(&next_cpu).enumerate() {
                if !stop_ids.contains(&tok) {
                    out[row].push(tok);
                    keep.push(k as i64);
                }
            }
            if keep.is_empty() {
                break;
            }
            let mut next = next;
            if keep.len() < active.len() {
                let kept = Tensor::from_slice(&keep).to_device(device);
                cache.select_rows(&kept);
                key_valid = key_valid.index_select(0, &kept);
                next_pos = next_pos.index_select(0, &kept);
                next = next.index_select(0, &kept);
                active = keep.iter().map(|&k| active[k as usize]).collect();
            }
            let b = active.len() as i64;
            let ones = Tensor::ones([b, 1], (Kind::Bool, device));
            key_valid = Tensor::cat(&[&key_valid, &ones], 1);
            let s = key_valid.size()[1];
            let step_mask = key_valid.view([b, 1, 1, s]);
            let step_pos = next_pos.view([b, 1]);
            let hidden = lm.forward(
                &next.view([b, 1]),
                &Attention::Masked {
                    positions: &step_pos,
                    mask: &step_mask,
                },
                Some(&mut cache),
            )?;
            last_hidden = hidden.select(1, 0);
            next_pos += 1;
        }
        Ok(())
    })?;
    for (row, tokens) in out.into_iter().enumerate() {
        per_prompt[read[owner[row]]].push(tokens);
    }
    Ok(per_prompt)
}

/// Samples one token per row from `logits / temperature`, keeping the smallest set of tokens
/// whose probability mass reaches `top_p`, by inverting the kept mass's cumulative sum at
/// `draws` (one uniform number in [0, 1) per row, shape [rows, 1]).
fn sample(logits: &Tensor, temperature: f64, top_p: f64, draws: &Tensor) -> Tensor {
    let probs = (logits / temperature).softmax(-1, Kind::Float);
    let (sorted, idx) = probs.sort(-1, true);
    let cum = sorted.cumsum(-1, Kind::Float);
    // drop a token when the mass before it already reaches top_p (the first always stays)
    let kept = if top_p >= 1.0 {
        sorted
    } else {
        let drop = (&cum - &sorted).ge(top_p);
        sorted.masked_fill(&drop, 0.0)
    };
    let kept_cum = kept.cumsum(-1, Kind::Float);
    let total = kept_cum.select(-1, kept_cum.size()[1] - 1).unsqueeze(-1);
    let target = draws * total;
    // the first position whose cumulative mass passes the target (never past the kept tokens,
    // should rounding bring the target up to the total)
    let last_kept = kept.gt(0.0).sum_dim_intlist(-1, true, Kind::Int64) - 1;
    let choice = kept_cum
        .le_tensor(&target)
        .sum_dim_intlist(-1, true, Kind::Int64)
        .minimum(&last_kept);
    idx.gather(-1, &choice, false).squeeze_dim(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_inverts_the_kept_mass_at_the_draw() {
        // probabilities 0.5, 0.3, 0.15, 0.05 for tokens 2, 0, 3, 1 (log-probabilities as logits)
        let probs = [0.3f32, 0.05, 0.5, 0.15];
        let logits = Tensor::from_slice(&probs.map(f32::ln)).view([1, 4]);
        let pick = |draw: f32, top_p: f64| {
            let d = Tensor::from_slice(&[draw]).view([1, 1]);
            i64::try_from(sample(&logits, 1.0, top_p, &d)).unwrap()
        };
        assert_eq!(pick(0.0, 1.0), 2);
        assert_eq!(pick(0.49, 1.0), 2);
        assert_eq!(pick(0.51, 1.0), 0);
        assert_eq!(pick(0.9, 1.0), 3);
        assert_eq!(pick(0.99, 1.0), 1);
        // top_p 0.8 keeps tokens 2 and 0 (mass 0.8): the draw spans them only
        assert_eq!(pick(0.6, 0.8), 2);
        assert_eq!(pick(0.7, 0.8), 0);
        assert_eq!(pick(0.999_999_9, 0.8), 0);
    }
}
