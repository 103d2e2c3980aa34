//! Sampling settings of text generation, shared by the local engine's generator and the API
//! teacher's requests.

/// How to sample a generation.
#[derive(Debug, Clone, Copy)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling mass (1.0 = off).
    pub top_p: f64,
    /// Seed of the sampler (of a run, for the API teacher).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 48,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}
