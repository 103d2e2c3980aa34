//! Batched text generation with a KV cache: greedy or temperature / top-p sampling, stop tokens.

use crate::decoder::{Attention, DecoderLm, KvCache};
use crate::error::{Result, SlmError};
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
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(SlmError::Argument(format!("prompt {i} is empty")));
    }
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
    for p in prompts {
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
    let mut rng_seeded = false;
    let mut out: Vec<Vec<i64>> = vec![vec![]; prompts.len()];
    let mut done = vec![false; prompts.len()];
    tch::no_grad(|| -> Result<()> {
        let hidden = lm.forward(
            &ids,
            &Attention::Masked {
                positions: &positions,
                mask: &mask,
            },
            Some(&mut cache),
        )?;
        let mut last_hidden = hidden.select(1, l - 1);
        let mut next_pos = positions.select(1, l - 1) + 1;
        for _ in 0..params.max_new_tokens {
            let logits = lm.logits(&last_hidden).to_kind(Kind::Float);
            let next = if params.temperature <= 0.0 {
                logits.argmax(-1, false)
            } else {
                if !rng_seeded {
                    tch::manual_seed(params.seed as i64);
                    rng_seeded = true;
                }
                sample(&logits, params.temperature, params.top_p)
            };
            let next_cpu: Vec<i64> = Vec::<i64>::try_from(&next.to_device(tch::Device::Cpu))?;
            for (row, &tok) in next_cpu.iter().enumerate() {
                if done[row] {
                    continue;
                }
                if stop_ids.contains(&tok) {
                    done[row] = true;
                } else {
                    out[row].push(tok);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
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
    Ok(out)
}

/// Samples one token per row from `logits / temperature`, keeping the smallest set of tokens
/// whose probability mass reaches `top_p`.
fn sample(logits: &Tensor, temperature: f64, top_p: f64) -> Tensor {
    let probs = (logits / temperature).softmax(-1, Kind::Float);
    if top_p >= 1.0 {
        return probs.multinomial(1, false).squeeze_dim(1);
    }
    let (sorted, idx) = probs.sort(-1, true);
    let cum = sorted.cumsum(-1, Kind::Float);
    // drop a token when the mass before it already reaches top_p (the first always stays)
    let drop = (&cum - &sorted).ge(top_p);
    let kept = sorted.masked_fill(&drop, 0.0);
    let choice = kept.multinomial(1, false);
    idx.gather(-1, &choice, false).squeeze_dim(1)
}
