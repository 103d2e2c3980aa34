//! A (query, document) pair to grade, the limits on its text, and how its document is shown to
//! a grader.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One (query, document) pair to grade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    /// Names the record in errors and outputs.
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub body: String,
    /// Document metadata shown to the grader (author, path, ...), rendered as `key: value` lines.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Limits on input text, so a pathological record gets an error instead of eating memory.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Longest accepted field, in bytes (default 512 KiB).
    pub max_field_bytes: usize,
    /// Longest accepted query, in tokens.
    pub max_query_tokens: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_field_bytes: 512 * 1024,
            max_query_tokens: 128,
        }
    }
}

/// Renders the document part of a prompt, minus the body: title and metadata lines.
pub(crate) fn document_header(pair: &Pair) -> String {
    let mut s = String::new();
    if let Some(t) = pair.title.as_deref().filter(|t| !t.trim().is_empty()) {
        s.push_str(&format!("Title: {}\n", t.trim()));
    }
    for (k, v) in &pair.metadata {
        if !v.trim().is_empty() {
            s.push_str(&format!("{}: {}\n", k, v.trim()));
        }
    }
    s
}

/// The document side of a cross-encoder input: title and metadata lines, then the body.
pub fn document_text(pair: &Pair) -> String {
    format!("{}{}", document_header(pair), pair.body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_text_has_title_metadata_then_body() {
        let pair = Pair {
            id: "p".into(),
            query: "q".into(),
            title: Some(" IT guide ".into()),
            body: " Install the client. ".into(),
            metadata: [
                ("author".to_string(), "Jane Doe".to_string()),
                ("path".to_string(), " ".to_string()),
            ]
            .into(),
        };
        assert_eq!(
            document_text(&pair),
            "Title: IT guide\nauthor: Jane Doe\nInstall the client."
        );
    }

    #[test]
    fn pairs_read_with_only_id_and_query() {
        let p: Pair = serde_json::from_str(r#"{"id": "a", "query": "b"}"#).unwrap();
        assert_eq!((p.title, p.body.as_str(), p.metadata.len()), (None, "", 0));
    }
}
