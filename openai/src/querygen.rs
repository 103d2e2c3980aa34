//! Query synthesis through the API with the local engine's prompts (`query-v1` for topic
//! queries, `query-meta-v1` for metadata queries): one request per query, each with its own
//! seed derived from (document id, index, run seed), so a re-run asks exactly the same requests
//! (and gets the same queries where the server honours seeds). Generations are cleaned by the
//! engine's rules and de-duplicated per document.

use crate::client::ApiClient;
use crate::error::ApiError;
use crate::grading::{check_document, clip, strip_special_tokens};
use crate::usage::Tally;
use crate::wire::{ChatRequest, ChatResponse};
use futures::StreamExt;
use labelfleet_types::prompt::intent_messages;
use labelfleet_types::query::{
    clean_intent_query, sample_intents, GeneratedQuery, QueryIntent, SeedDocument,
};
use labelfleet_types::{ChatMessage, SamplingParams};

/// The seed of query `index` of document `doc_id` in a run seeded with `run_seed`. It stays
/// below 2^31, which every server takes (llama.cpp reads 2^32-1 as "random").
pub fn request_seed(doc_id: &str, index: usize, run_seed: u64) -> u64 {
    let key = labelfleet_cache::key(&[
        "query-seed",
        doc_id,
        &index.to_string(),
        &run_seed.to_string(),
    ]);
    // the key is hex: its first 8 digits are 32 bits
    u64::from_str_radix(&key[..8], 16).unwrap_or(0) & 0x7fff_ffff
}

/// The messages asking for a query of `intent` about a document, with the body cut to
/// `max_document_bytes`. Errors name the document and field.
pub fn query_request_messages(
    doc: &SeedDocument,
    intent: &QueryIntent,
    max_document_bytes: usize,
) -> Result<Vec<ChatMessage>, ApiError> {
    let input = |field: &str, message: &str| ApiError::Input {
        record: if doc.id.trim().is_empty() {
            "<no id>".into()
        } else {
            doc.id.clone()
        },
        field: field.into(),
        message: message.into(),
    };
    if doc.id.trim().is_empty() {
        return Err(input("id", "empty"));
    }
    check_document(&doc.id, doc.title.as_deref(), &doc.body, &doc.metadata)?;
    let (body, _) = clip(doc.body.trim(), max_document_bytes);
    let clipped = SeedDocument {
        body: body.to_string(),
        ..doc.clone()
    };
    Ok(intent_messages(&clipped, intent, strip_special_tokens))
}

fn answer_text(response: &ChatResponse, record: &str) -> Result<String, ApiError> {
    let choice = response
        .choices
        .first()
        .ok_or_else(|| ApiError::Malformed {
            record: record.to_string(),
            message: "`choices` is empty".into(),
            excerpt: String::new(),
        })?;
    Ok(choice.message.content.clone().unwrap_or_default())
}

impl ApiClient {
    /// Writes up to `per_doc` distinct topic queries and `metadata_per_doc` metadata queries
    /// (for documents with author, path, ... metadata) for each document, one request each,
    /// sampled with `params` (`max_new_tokens`, `temperature`, `top_p`; `seed` is the run
    /// seed). One result per document, in input order. A document fails alone, with the first
    /// error of its requests; a generation that cleans to nothing is dropped, as in the local
    /// engine. `on_done` is called as each request finishes.
    pub async fn synthesize(
        &self,
        docs: &[SeedDocument],
        per_doc: usize,
        metadata_per_doc: usize,
        params: &SamplingParams,
        on_done: &(dyn Fn() + Sync),
    ) -> Vec<Result<Vec<GeneratedQuery>, ApiError>> {
        self.synthesize_with(docs, per_doc, metadata_per_doc, params, None, on_done)
            .await
    }

    /// [`Self::synthesize`], booking the calls in `tally` too.
    pub async fn synthesize_with(
        &self,
        docs: &[SeedDocument],
        per_doc: usize,
        metadata_per_doc: usize,
        params: &SamplingParams,
        tally: Option<&Tally>,
        on_done: &(dyn Fn() + Sync),
    ) -> Vec<Result<Vec<GeneratedQuery>, ApiError>> {
        let max_bytes = self.config().max_document_bytes;
        // the requests of every document, or the document's input error
        let mut out: Vec<Result<Vec<GeneratedQuery>, ApiError>> = vec![];
        let mut jobs = vec![];
        for (d, doc) in docs.iter().enumerate() {
            let requests: Result<Vec<_>, ApiError> = sample_intents(doc, per_doc, metadata_per_doc)
                .into_iter()
                .enumerate()
                .map(|(i, intent)| {
                    query_request_messages(doc, &intent, max_bytes).map(|m| (d, i, intent, m))
                })
                .collect();
            match requests {
                Ok(requests) => {
                    out.push(Ok(vec![]));
                    jobs.extend(requests);
                }
                Err(e) => out.push(Err(e)),
            }
        }
        // the futures are made first, so the whole future stays `Send` (see `grade_pairs_with`)
        let calls: Vec<_> = jobs
            .into_iter()
            .map(|(d, i, intent, messages)| async move {
                let result = self
                    .generate_one(&docs[d], i, &intent, &messages, params, tally)
                    .await;
                on_done();
                (d, intent, result)
            })
            .collect();
        let answers: Vec<(usize, QueryIntent, Result<Option<String>, ApiError>)> =
            futures::stream::iter(calls)
                .buffered(self.config().concurrency)
                .collect()
                .await;
        let mut seen: Vec<std::collections::HashSet<String>> = vec![Default::default(); docs.len()];
        for (d, intent, answer) in answers {
            match answer {
                Err(e) => {
                    if out[d].is_ok() {
                        out[d] = Err(e);
                    }
                }
                Ok(None) => {}
                Ok(Some(query)) => {
                    let fresh = seen[d].insert(query.to_lowercase());
                    if let (true, Ok(queries)) = (fresh, &mut out[d]) {
                        queries.push(GeneratedQuery {
                            doc_id: docs[d].id.clone(),
                            query,
                            prompt_version: intent.prompt_version().into(),
                            metadata_field: match intent {
                                QueryIntent::Topic => None,
                                QueryIntent::Metadata { field } => Some(field),
                            },
                        });
                    }
                }
            }
        }
        out
    }

    /// One sampled query of `intent` for `doc` (`None` when the generation is unusable).
    async fn generate_one(
        &self,
        doc: &SeedDocument,
        index: usize,
        intent: &QueryIntent,
        messages: &[ChatMessage],
        params: &SamplingParams,
        tally: Option<&Tally>,
    ) -> Result<Option<String>, ApiError> {
        let config = self.config();
        let mut request = ChatRequest::new(&config.model, messages, params.max_new_tokens as u32);
        request.temperature = params.temperature;
        request.top_p = Some(params.top_p);
        request.seed = Some(request_seed(&doc.id, index, params.seed));
        let record = format!("document {}, query {index}", doc.id);
        let raw = self
            .complete(&record, &request, tally, |r| answer_text(r, &record))
            .await?;
        Ok(clean_intent_query(&raw, doc, intent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable_distinct_and_31_bit() {
        let a = request_seed("doc-1", 0, 7);
        assert_eq!(a, request_seed("doc-1", 0, 7));
        assert_ne!(a, request_seed("doc-1", 1, 7));
        assert_ne!(a, request_seed("doc-2", 0, 7));
        assert_ne!(a, request_seed("doc-1", 0, 8));
        for i in 0..1000 {
            assert!(request_seed("d", i, 0) < 1 << 31);
        }
    }

    #[test]
    fn messages_are_the_engines_prompts() {
        let doc = SeedDocument {
            id: "d1".into(),
            title: Some("Travel policy".into()),
            body: "Book trains for trips under 4 hours.".into(),
            metadata: [("author".to_string(), "Jane Doe".to_string())].into(),
        };
        for intent in [
            QueryIntent::Topic,
            QueryIntent::Metadata {
                field: "author".into(),
            },
        ] {
            assert_eq!(
                query_request_messages(&doc, &intent, 1 << 15).unwrap(),
                intent_messages(&doc, &intent, |s| s.to_string())
            );
        }
        assert_eq!(
            query_request_messages(&doc, &QueryIntent::Topic, 1 << 15).unwrap(),
            labelfleet_types::prompt::query_messages(&doc, |s| s.to_string())
        );
        let empty = SeedDocument {
            body: " ".into(),
            title: None,
            ..doc
        };
        assert_eq!(
            query_request_messages(&empty, &QueryIntent::Topic, 1 << 15)
                .unwrap_err()
                .to_string(),
            "record d1: field `body`: empty document (no body and no title)"
        );
    }
}
