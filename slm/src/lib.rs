//! labelfleet's model engine on libtorch (`tch`): tokenizers and chat templates, llama-family
//! decoder LMs and BERT cross-encoders loaded from Hugging Face folders, relevance grading with
//! token-budget batching, batched generation with a KV cache, and distillation training whose
//! checkpoints load back in Python `transformers`. No networking here.

pub mod config;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod error;
pub mod generate;
pub mod grading;
pub mod layers;
pub mod querygen;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::{DecoderConfig, EncoderConfig};
pub use decoder::DecoderLm;
pub use device::Placement;
pub use encoder::CrossEncoder;
pub use error::{Result, SlmError};
pub use grading::{DecoderGrader, EncodedPair, EncoderGrader, Grader, Grading, Pair};
pub use tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};

/// Where labelfleet keeps its venv, models and caches: `$LABELFLEET_HOME`, else
/// `~/.cache/labelfleet` (what `scripts/setup.sh` fills).
pub fn home_dir() -> std::path::PathBuf {
    if let Some(h) = std::env::var_os("LABELFLEET_HOME") {
        return h.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    base.join("labelfleet")
}

/// The folder of a bundled model by short name (`smollm2`, `minilm`), or the path itself.
pub fn resolve_model(name_or_path: &str) -> std::path::PathBuf {
    match name_or_path {
        "smollm2" | "smollm2-135m-instruct" => home_dir().join("models/smollm2-135m-instruct"),
        "minilm" | "all-minilm-l6-v2" => home_dir().join("models/all-minilm-l6-v2"),
        other => std::path::PathBuf::from(other),
    }
}
