//! Query synthesis, the model-free part: the documents queries are written for, what a query is
//! asked to find a document by, and the clean-up of what a model writes (one line, no quotes,
//! no chatter, no copy of the document, grounded in the document, length limits). The prompts
//! themselves are in [`crate::prompt`].

use crate::prompt::{METADATA_QUERY_PROMPT_VERSION, QUERY_PROMPT_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Metadata fields a metadata query may name, in this order of preference.
pub const METADATA_FIELDS: &[&str] = &["author", "path", "filename", "file_name", "source"];

/// A query a model wrote for a document, with the prompt version that asked for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GeneratedQuery {
    pub doc_id: String,
    pub query: String,
    pub prompt_version: String,
    /// The metadata field a metadata query names (`author`, `path`, ...); none for a topic query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_field: Option<String>,
}

/// What a query is asked to find the document by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryIntent {
    /// Its topic (`query-v1`).
    Topic,
    /// One metadata field and its topic (`query-meta-v1`).
    Metadata { field: String },
}

impl QueryIntent {
    /// The version of the prompt that asks for a query of this intent.
    pub fn prompt_version(&self) -> &'static str {
        match self {
            QueryIntent::Topic => QUERY_PROMPT_VERSION,
            QueryIntent::Metadata { .. } => METADATA_QUERY_PROMPT_VERSION,
        }
    }
}

/// The metadata fields of `doc` a metadata query can name, in [`METADATA_FIELDS`] order.
pub fn metadata_fields(doc: &SeedDocument) -> Vec<&'static str> {
    METADATA_FIELDS
        .iter()
        .copied()
        .filter(|f| {
            doc.metadata
                .get(*f)
                .is_some_and(|v| !value_tokens(v).is_empty())
        })
        .collect()
}

/// The distinctive tokens of a metadata value: "kendall,j.m." -> ["kendall"],
/// "hr/policies/travel.md" -> ["policies", "travel"].
fn value_tokens(value: &str) -> Vec<String> {
    value
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() >= 3 && !matches!(*t, "txt" | "pdf" | "doc" | "docx"))
        .map(|t| t.to_lowercase())
        .collect()
}

/// Whether `query` names the metadata value (one of its distinctive tokens, as a word).
pub fn mentions_value(query: &str, value: &str) -> bool {
    let words: std::collections::HashSet<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    value_tokens(value).iter().any(|t| words.contains(t))
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
    // talk about the task instead of a query: "Here's a more polished search query:", "Excuse
    // me for the last one."
    if line.ends_with(':') || CHATTER.iter().any(|c| lower.contains(c)) {
        return None;
    }
    let words = line.split_whitespace().count();
    if !(2..=16).contains(&words) || line.len() > 160 {
        return None;
    }
    if words >= 8 && doc.body.to_lowercase().contains(&lower) {
        return None;
    }
    if !grounded(&lower, doc) {
        return None;
    }
    Some(line.to_string())
}

/// Phrases of a model talking about its answer rather than giving it.
const CHATTER: &[&str] = &[
    "search query",
    "this document",
    "the document",
    "this note",
    "here is",
    "here's",
    "excuse me",
    "response",
    "i cannot",
    "i can't",
    "sorry",
    "as an ai",
];

/// Words too common to show that a query is about its document.
const STOPWORDS: &[&str] = &[
    "about", "after", "also", "been", "between", "both", "does", "each", "find", "from", "have",
    "into", "more", "most", "other", "over", "same", "some", "such", "than", "that", "their",
    "them", "then", "there", "these", "they", "this", "under", "used", "using", "very", "what",
    "when", "where", "which", "while", "with", "within", "without", "would", "your",
];

/// A query is grounded when one of its content words (4+ letters, not a stop word) occurs in
/// the document's title, body or metadata; words match on their first 4 letters, so "flows"
/// finds "flow" and "jumping" finds "jumps".
fn grounded(query_lower: &str, doc: &SeedDocument) -> bool {
    let stem = |w: &str| w.chars().take(4).collect::<String>();
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4 && w.chars().all(char::is_alphabetic))
            .map(|w| w.to_lowercase())
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .collect()
    };
    let mut text = doc.title.clone().unwrap_or_default();
    text.push(' ');
    text.push_str(&doc.body);
    for v in doc.metadata.values() {
        text.push(' ');
        text.push_str(v);
    }
    let doc_stems: std::collections::HashSet<String> =
        words(&text).iter().map(|w| stem(w)).collect();
    words(query_lower)
        .iter()
        .any(|w| doc_stems.contains(&stem(w)))
}

/// Cleans a generation for `intent`: a metadata query must also name its field's value.
pub fn clean_intent_query(raw: &str, doc: &SeedDocument, intent: &QueryIntent) -> Option<String> {
    let q = clean_query(raw, doc)?;
    match intent {
        QueryIntent::Topic => Some(q),
        QueryIntent::Metadata { field } => doc
            .metadata
            .get(field)
            .filter(|v| mentions_value(&q, v))
            .map(|_| q),
    }
}

/// The intents of the samples drawn for one document: `per_doc` topic queries, then
/// `metadata_per_doc` metadata queries that rotate over the fields the document has.
pub fn sample_intents(
    doc: &SeedDocument,
    per_doc: usize,
    metadata_per_doc: usize,
) -> Vec<QueryIntent> {
    let fields = metadata_fields(doc);
    let mut intents = vec![QueryIntent::Topic; per_doc];
    if !fields.is_empty() {
        intents.extend((0..metadata_per_doc).map(|j| QueryIntent::Metadata {
            field: fields[j % fields.len()].to_string(),
        }));
    }
    intents
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::intent_messages;

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
        let d =
            doc("The EMEA revenue report; the VPN setup guide; stagnation-point heat transfer.");
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
    fn metadata_queries_name_their_field() {
        let d = SeedDocument {
            id: "d".into(),
            title: Some("Supersonic blunt-body flows".into()),
            body: "Experiments on supersonic flows past blunt bodies.".into(),
            metadata: [
                ("author".to_string(), "kendall,j.m.".to_string()),
                ("path".to_string(), "aero/reports/blunt-body.md".to_string()),
                ("year".to_string(), "1958".to_string()),
            ]
            .into(),
        };
        assert_eq!(metadata_fields(&d), vec!["author", "path"]);
        let intents = sample_intents(&d, 2, 3);
        assert_eq!(intents.len(), 5);
        assert_eq!(intents[..2], [QueryIntent::Topic, QueryIntent::Topic]);
        let fields: Vec<_> = intents[2..]
            .iter()
            .map(|i| match i {
                QueryIntent::Metadata { field } => field.as_str(),
                QueryIntent::Topic => "topic",
            })
            .collect();
        assert_eq!(fields, ["author", "path", "author"], "fields rotate");
        let author = QueryIntent::Metadata {
            field: "author".into(),
        };
        assert_eq!(
            clean_intent_query("kendall supersonic flow experiments", &d, &author).as_deref(),
            Some("kendall supersonic flow experiments")
        );
        assert_eq!(
            clean_intent_query("supersonic flow experiments", &d, &author),
            None,
            "a metadata query must name the value"
        );
        let path = QueryIntent::Metadata {
            field: "path".into(),
        };
        assert!(clean_intent_query("blunt body reports folder", &d, &path).is_some());
        // the metadata prompt names the field and its value
        let m = intent_messages(&d, &author, |s| s.to_string());
        assert!(m[1].content.contains("by its author (kendall,j.m.)"));
        assert_eq!(author.prompt_version(), "query-meta-v1");
        // a document without such metadata gets topic queries only
        let bare = doc("Experiments on supersonic flows.");
        assert_eq!(sample_intents(&bare, 2, 3), vec![QueryIntent::Topic; 2]);
    }

    #[test]
    fn drops_chatter_and_ungrounded_queries() {
        let d = SeedDocument {
            id: "d".into(),
            title: Some("Buckling of conical shells".into()),
            body: "Experiments on supersonic flows past blunt bodies.".into(),
            metadata: [("author".to_string(), "kendall,j.m.".to_string())].into(),
        };
        for chatter in [
            "Excuse me for the last one.",
            "What a great find! Here's a more polished search query:",
            "The document can be found here.",
            "A single query:",
            "Could be found in:",
        ] {
            assert_eq!(clean_query(chatter, &d), None, "{chatter}");
        }
        // no content word of the document: not a query for it
        assert_eq!(clean_query("quarterly revenue forecast", &d), None);
        // grounded in the body, the title (by stem) or the author
        for ok in [
            "supersonic blunt body flow",
            "conical shell buckle",
            "papers by kendall",
        ] {
            assert_eq!(clean_query(ok, &d).as_deref(), Some(ok));
        }
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
