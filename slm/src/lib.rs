//! labelfleet's model engine on libtorch (`tch`): tokenizers and chat templates, llama-family
//! decoder LMs and BERT cross-encoders loaded from Hugging Face folders, relevance grading with
//! token-budget batching, batched generation with a KV cache, distillation training whose
//! checkpoints load back in Python `transformers`, and the engine thread that hosts the models
//! for a server role. No networking here.

pub mod attention;
pub mod config;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod error;
pub mod export;
pub mod generate;
pub mod grading;
pub mod host;
pub mod int8;
pub mod layers;
pub mod onednn;
pub mod querygen;
mod shim;
pub mod similarity;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::{DecoderConfig, EncoderConfig};
pub use decoder::DecoderLm;
pub use device::Placement;
pub use encoder::{CrossEncoder, TopRows};
pub use error::{Result, SlmError};
pub use grading::{DecoderGrader, EncodedPair, EncoderGrader, Grader, Grading, Pair};
pub use tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};

/// Paths are shared with every crate: they live in `labelfleet-types`.
pub use labelfleet_types::{home_dir, resolve_model};
