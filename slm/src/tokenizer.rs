//! Tokenizer (Hugging Face `tokenizer.json` through the `tokenizers` crate) with its chat template.

use crate::error::{Result, SlmError};
use std::path::{Path, PathBuf};

/// Chat messages and templates are pure string building: they live in `labelfleet-types`.
pub use labelfleet_types::chat::{ChatMessage, ChatTemplate};

/// A model's tokenizer with its chat template and special tokens.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pub template: ChatTemplate,
    /// Tokens that end generation (EOS and the end-of-turn token).
    pub stop_ids: Vec<i64>,
    pub pad_id: i64,
    special_strings: Vec<String>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(SlmError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json not found in the model folder",
                ),
            ));
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| SlmError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        // Batching and truncation are the engine's job (it truncates the document, never the
        // query); a tokenizer.json may carry its own (MiniLM's pads every text to 128).
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| SlmError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.is_file() {
            Some(crate::config::read_json(&cfg_path)?)
        } else {
            None
        };
        let jinja_file = dir.join("chat_template.jinja");
        let jinja = match cfg.as_ref().and_then(|c| c.get("chat_template")) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => std::fs::read_to_string(&jinja_file).ok(),
        };
        let special = |key: &str| -> Option<String> {
            match cfg.as_ref()?.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
                _ => None,
            }
        };
        let template = ChatTemplate::from_jinja(
            jinja.as_deref(),
            special("bos_token").as_deref(),
            special("eos_token").as_deref(),
        )
        .map_err(|e| SlmError::Tokenizer {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?;
        let mut stop_ids = vec![];
        for tok in [
            special("eos_token"),
            template.end_of_turn().map(String::from),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = inner.token_to_id(&tok) {
                if !stop_ids.contains(&(id as i64)) {
                    stop_ids.push(id as i64);
                }
            }
        }
        let pad_id = special("pad_token")
            .and_then(|p| inner.token_to_id(&p))
            .or_else(|| stop_ids.first().map(|&i| i as u32))
            .unwrap_or(0) as i64;
        let special_strings = inner
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        Ok(TextTokenizer {
            inner,
            path,
            template,
            stop_ids,
            pad_id,
            special_strings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// Encodes text as it is, adding no special tokens (chat templates carry their own).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| SlmError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Encodes with the tokenizer's own post-processor (e.g. BERT's `[CLS] a [SEP]`).
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| SlmError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, skip_special)
            .map_err(|e| SlmError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// Removes special-token strings from user text so a document cannot end a chat turn or
    /// inject a role; repeated until none is left (a removal cannot assemble another).
    pub fn sanitize(&self, text: &str) -> String {
        labelfleet_types::sanitize::strip_strings(text, &self.special_strings)
    }

    /// The prompt text of a chat, by the model's own template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.template
            .render(messages, add_generation_prompt)
            .map_err(|e| SlmError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }
}
