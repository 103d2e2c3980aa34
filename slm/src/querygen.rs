//! Query synthesis from a document: a versioned prompt, batched sampling, and clean-up of what
//! the model writes (one line, no quotes, no copy of the document, length limits).

use crate::decoder::DecoderLm;
use crate::error::{Result, SlmError};
use crate::generate::{generate_samples, SamplingParams};
use crate::tokenizer::TextTokenizer;
use labelfleet_types::prompt::query_messages_with_body;

// Seed documents, intents, the query prompts and the clean-up rules are torch-free and shared
// with the API teacher: they live in `labelfleet-types`.
pub use labelfleet_types::prompt::{
    intent_messages, query_messages, METADATA_QUERY_PROMPT_VERSION, QUERY_PROMPT_VERSION,
};
pub use labelfleet_types::query::{
    clean_intent_query, clean_query, mentions_value, metadata_fields, sample_intents,
    GeneratedQuery, QueryIntent, SeedDocument, METADATA_FIELDS,
};

const BODY_MARKER: &str = "\u{1}BODY\u{1}";

/// Builds the chat prompt ids for a document within `max_prompt_tokens`: the body is cut to
/// fit, the title, metadata and instructions never are.
pub fn prompt_ids(
    tok: &TextTokenizer,
    doc: &SeedDocument,
    max_prompt_tokens: usize,
) -> Result<Vec<i64>> {
    intent_prompt_ids(tok, doc, &QueryIntent::Topic, max_prompt_tokens)
}

/// [`prompt_ids`] for a query of the given intent.
pub fn intent_prompt_ids(
    tok: &TextTokenizer,
    doc: &SeedDocument,
    intent: &QueryIntent,
    max_prompt_tokens: usize,
) -> Result<Vec<i64>> {
    if doc.body.trim().is_empty() && doc.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(SlmError::input(
            &doc.id,
            "body",
            "empty document (no body and no title)",
        ));
    }
    let messages = query_messages_with_body(doc, intent, &|s: &str| tok.sanitize(s), BODY_MARKER);
    let text = tok.render_chat(&messages, true)?;
    let (prefix, suffix) = text
        .split_once(BODY_MARKER)
        .ok_or_else(|| SlmError::Tokenizer {
            path: tok.path().to_path_buf(),
            message: "the chat template drops the document from the query prompt".into(),
        })?;
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

/// Writes up to `per_doc` distinct topic queries and `metadata_per_doc` distinct metadata
/// queries per document (one sample each; unusable samples and duplicates are dropped). Each
/// distinct prompt is read once and sampled as many times as its intent is asked for.
pub fn synthesize(
    lm: &DecoderLm,
    tok: &TextTokenizer,
    docs: &[SeedDocument],
    per_doc: usize,
    metadata_per_doc: usize,
    params: &SamplingParams,
    max_prompt_tokens: usize,
) -> Result<Vec<GeneratedQuery>> {
    let mut prompts = vec![];
    let mut counts = vec![];
    let mut owners = vec![];
    for (i, d) in docs.iter().enumerate() {
        for (intent, n) in distinct_intents(sample_intents(d, per_doc, metadata_per_doc)) {
            prompts.push(intent_prompt_ids(tok, d, &intent, max_prompt_tokens)?);
            counts.push(n);
            owners.push((i, intent));
        }
    }
    let outs = generate_samples(lm, &prompts, &counts, params, &tok.stop_ids, tok.pad_id)?;
    let mut result = vec![];
    let mut seen = std::collections::HashSet::new();
    for (samples, (i, intent)) in outs.iter().zip(owners) {
        let d = &docs[i];
        for out in samples {
            let Some(q) = clean_intent_query(&tok.decode(out, true)?, d, &intent) else {
                continue;
            };
            if seen.insert((i, q.to_lowercase())) {
                result.push(GeneratedQuery {
                    doc_id: d.id.clone(),
                    query: q,
                    prompt_version: intent.prompt_version().into(),
                    metadata_field: match &intent {
                        QueryIntent::Topic => None,
                        QueryIntent::Metadata { field } => Some(field.clone()),
                    },
                });
            }
        }
    }
    Ok(result)
}

/// Each distinct intent once, with how many times it was asked for, in first-asked order.
fn distinct_intents(intents: Vec<QueryIntent>) -> Vec<(QueryIntent, usize)> {
    let mut distinct: Vec<(QueryIntent, usize)> = vec![];
    for intent in intents {
        match distinct.iter_mut().find(|(seen, _)| *seen == intent) {
            Some((_, n)) => *n += 1,
            None => distinct.push((intent, 1)),
        }
    }
    distinct
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_intents_count_repeats_in_first_asked_order() {
        let author = QueryIntent::Metadata {
            field: "author".into(),
        };
        let path = QueryIntent::Metadata {
            field: "path".into(),
        };
        let asked = vec![
            QueryIntent::Topic,
            QueryIntent::Topic,
            author.clone(),
            path.clone(),
            author.clone(),
        ];
        assert_eq!(
            distinct_intents(asked),
            vec![(QueryIntent::Topic, 2), (author, 2), (path, 1)]
        );
        assert!(distinct_intents(vec![]).is_empty());
    }
}
