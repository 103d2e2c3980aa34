//! Query synthesis from a document: a versioned prompt, batched sampling, and clean-up of what
//! the model writes (one line, no quotes, no copy of the document, length limits).

use crate::decoder::DecoderLm;
use crate::error::{Result, SlmError};
use crate::generate::{generate, SamplingParams};
use crate::tokenizer::{ChatMessage, TextTokenizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const QUERY_PROMPT_VERSION: &str = "query-v1";

const QUERY_SYSTEM: &str =
    "You write the search queries that employees type into their company's internal search engine.";

/// A document to write queries for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedDocument {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub body: String,
    /// Author, path, file name, ...: the model may write metadata queries from them.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GeneratedQuery {
    pub doc_id: String,
    pub query: String,
    pub prompt_version: String,
}

const BODY_MARKER: &str = "\u{1}BODY\u{1}";

/// The chat messages of the `query-v1` prompt for a document: the one definition of the query
/// synthesis prompt, shared by the local engine and the API teacher (`labelfleet-openai`).
/// `sanitize` strips whatever the model would read as control tokens from user text. The body
/// goes in whole; a caller with a token budget cuts it first.
pub fn query_messages(doc: &SeedDocument, sanitize: impl Fn(&str) -> String) -> Vec<ChatMessage> {
    let body = sanitize(doc.body.trim());
    query_messages_with_body(doc, &sanitize, &body)
}

/// [`query_messages`] with `body` put in place as it is (already sanitized, or a marker).
fn query_messages_with_body(
    doc: &SeedDocument,
    sanitize: &dyn Fn(&str) -> String,
    body: &str,
) -> Vec<ChatMessage> {
    let mut header = String::new();
    if let Some(t) = doc.title.as_deref().filter(|t| !t.trim().is_empty()) {
        header.push_str(&format!("Title: {}\n", sanitize(t.trim())));
    }
    for (k, v) in &doc.metadata {
        header.push_str(&format!("{k}: {}\n", sanitize(v.trim())));
    }
    let user = format!(
        "Here is a document from the company intranet.\n\n{header}{body}\n\n\
         Write one short search query (2 to 10 words) that an employee looking for this document \
         would type. Reply with the query only."
    );
    vec![ChatMessage::system(QUERY_SYSTEM), ChatMessage::user(user)]
}

/// Builds the chat prompt ids for a document within `max_prompt_tokens`: the body is cut to
/// fit, the title, metadata and instructions never are.
pub fn prompt_ids(
    tok: &TextTokenizer,
    doc: &SeedDocument,
    max_prompt_tokens: usize,
) -> Result<Vec<i64>> {
    if doc.body.trim().is_empty() && doc.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(SlmError::input(
            &doc.id,
            "body",
            "empty document (no body and no title)",
        ));
    }
    let messages = query_messages_with_body(doc, &|s: &str| tok.sanitize(s), BODY_MARKER);
    let text = tok.render_chat(&messages, true);
    let (prefix, suffix) = text
        .split_once(BODY_MARKER)
        .expect("marker is in the prompt");
    let mut ids = tok.encode(prefix)?;
    let suffix_ids = tok.encode(suffix)?;
    let room = max_prompt_tokens.saturating_sub(ids.len() + suffix_ids.len());
    if room < 16 {
        return Err(SlmError::input(
            &doc.id,
            "metadata",
            format!(
                "title and metadata take {} of the {max_prompt_tokens} prompt tokens",
                ids.len() + suffix_ids.len()
            ),
        ));
    }
    let body = tok.sanitize(doc.body.trim());
    let cut = body
        .char_indices()
        .nth(room * 16)
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let mut body_ids = tok.encode(&body[..cut])?;
    body_ids.truncate(room);
    ids.extend(body_ids);
    ids.extend(suffix_ids);
    Ok(ids)
}

/// Cleans a generation into a query, or `None` when it is unusable: empty, too short or long,
/// or a verbatim copy of a long span of the document.
pub fn clean_query(raw: &str, doc: &SeedDocument) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .trim_start_matches(|c: char| {
            c == '-' || c == '*' || c.is_ascii_digit() || c == '.' || c == ')'
        })
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .trim();
    let line = line
        .strip_prefix("Query:")
        .or_else(|| line.strip_prefix("query:"))
        .unwrap_or(line)
        .trim();
    // small models preface the answer ("Here is a search query: ..."): keep what follows
    let line = match (line.starts_with("Here"), line.split_once(':')) {
        (true, Some((_, rest))) => rest.trim().trim_matches(|c| c == '"' || c == '\''),
        (true, None) => return None,
        _ => line,
    };
    let lower = line.to_lowercase();
    if lower.contains("http://") || lower.contains("https://") || lower.contains("www.") {
        return None;
    }
    let words = line.split_whitespace().count();
    if !(2..=16).contains(&words) || line.len() > 160 {
        return None;
    }
    if words >= 8 && doc.body.to_lowercase().contains(&lower) {
        return None;
    }
    Some(line.to_string())
}

/// Writes up to `per_doc` distinct queries per document, sampling `per_doc` continuations each.
pub fn synthesize(
    lm: &DecoderLm,
    tok: &TextTokenizer,
    docs: &[SeedDocument],
    per_doc: usize,
    params: &SamplingParams,
    max_prompt_tokens: usize,
) -> Result<Vec<GeneratedQuery>> {
    let mut prompts = Vec::with_capacity(docs.len() * per_doc);
    for d in docs {
        let ids = prompt_ids(tok, d, max_prompt_tokens)?;
        for _ in 0..per_doc {
            prompts.push(ids.clone());
        }
    }
    let outs = generate(lm, &prompts, params, &tok.stop_ids, tok.pad_id)?;
    let mut result = vec![];
    for (i, d) in docs.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for out in &outs[i * per_doc..(i + 1) * per_doc] {
            if let Some(q) = clean_query(&tok.decode(out, true)?, d) {
                if seen.insert(q.to_lowercase()) {
                    result.push(GeneratedQuery {
                        doc_id: d.id.clone(),
                        query: q,
                        prompt_version: QUERY_PROMPT_VERSION.into(),
                    });
                }
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> SeedDocument {
        SeedDocument {
            id: "d".into(),
            title: None,
            body: body.into(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn cleans_quotes_bullets_and_prefixes() {
        let d = doc("anything");
        assert_eq!(
            clean_query("\"EMEA revenue report Q3\"\nmore", &d).as_deref(),
            Some("EMEA revenue report Q3")
        );
        assert_eq!(
            clean_query("1. Query: vpn setup guide", &d).as_deref(),
            Some("vpn setup guide")
        );
        assert_eq!(clean_query("   \n", &d), None);
        assert_eq!(clean_query("word", &d), None);
        assert_eq!(
            clean_query("Here is a search query: \"stagnation heat transfer\"", &d).as_deref(),
            Some("stagnation heat transfer")
        );
        assert_eq!(
            clean_query(
                "Here's a rewritten search query to narrow down the text:",
                &d
            ),
            None
        );
        assert_eq!(
            clean_query("see https://example.com/report for details", &d),
            None
        );
    }

    #[test]
    fn query_prompt_bytes_are_query_v1() {
        // The prompt version is a promise: these bytes may only change with a new version.
        let d = SeedDocument {
            id: "d".into(),
            title: Some(" Travel policy ".into()),
            body: " Book trains for trips under 4 hours. <|im_end|>".into(),
            metadata: [("path".to_string(), "hr/travel.md".to_string())].into(),
        };
        let messages = query_messages(&d, |s| s.replace("<|im_end|>", ""));
        let text = crate::ChatTemplate::ChatMl {
            default_system: None,
        }
        .render(&messages, true);
        let expected = format!(
            "<|im_start|>system\n{QUERY_SYSTEM}<|im_end|>\n<|im_start|>user\n\
             Here is a document from the company intranet.\n\nTitle: Travel policy\n\
             path: hr/travel.md\nBook trains for trips under 4 hours. \n\n\
             Write one short search query (2 to 10 words) that an employee looking for this \
             document would type. Reply with the query only.<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn rejects_copies_of_the_document() {
        let body = "the quick brown fox jumps over the lazy dog every single morning";
        assert_eq!(
            clean_query("the quick brown fox jumps over the lazy dog", &doc(body)),
            None
        );
        assert!(clean_query("fox jumping habits", &doc(body)).is_some());
    }
}
