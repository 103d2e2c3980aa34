//! The versioned prompts: grading (`grade-v1`, `grade-v2`) and query synthesis (`query-v1`,
//! `query-meta-v1`), each with the one definition of its chat messages, shared by the local
//! engine and the API teacher. A version's text never changes; a new text is a new version.
//!
//! Builders take a `sanitize` function that strips whatever the model would read as control
//! tokens from user text: the local engine passes its tokenizer's, the API teacher
//! [`crate::sanitize::strip_special_tokens`].

use crate::chat::ChatMessage;
use crate::error::PromptError;
use crate::pair::{document_header, Pair};
use crate::query::{QueryIntent, SeedDocument};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Grading

/// Prompt templates are versioned: a label records the version it was made with, and a cache
/// keyed by it re-grades only when the prompt changes. This is the default version.
pub const GRADE_PROMPT_VERSION: &str = "grade-v1";

/// The grading prompts, by version. A version's text never changes; a new text is a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum GradePrompt {
    /// The 0-3 rubric on the query and the document.
    #[default]
    #[serde(rename = "grade-v1")]
    V1,
    /// The same rubric, plus how enterprise searches name metadata: a query that names the
    /// author, file name or path is answered only by a document whose metadata matches.
    #[serde(rename = "grade-v2")]
    V2,
}

impl GradePrompt {
    /// Every version, oldest first.
    pub const ALL: [GradePrompt; 2] = [GradePrompt::V1, GradePrompt::V2];

    /// The version name (`grade-v1`, ...), as labels and caches record it.
    pub fn version(self) -> &'static str {
        match self {
            GradePrompt::V1 => "grade-v1",
            GradePrompt::V2 => "grade-v2",
        }
    }

    /// The prompt of a version name; empty means the default.
    pub fn parse(version: &str) -> Result<GradePrompt, PromptError> {
        if version.is_empty() {
            return Ok(GradePrompt::default());
        }
        GradePrompt::ALL
            .into_iter()
            .find(|p| p.version() == version)
            .ok_or_else(|| PromptError::UnknownGradePrompt {
                version: version.to_string(),
                known: GradePrompt::ALL.map(|p| p.version()).join(", "),
            })
    }

    fn system(self) -> &'static str {
        match self {
            GradePrompt::V1 => GRADE_SYSTEM,
            GradePrompt::V2 => GRADE_SYSTEM_V2,
        }
    }
}

const GRADE_SYSTEM: &str = "You are a search quality rater for an enterprise search engine. \
Given a search query and a document, rate how relevant the document is to the query:\n\
3 = perfectly relevant: the document is exactly what the query looks for\n\
2 = highly relevant: the document answers the query in large part\n\
1 = related: on the topic of the query, but does not answer it\n\
0 = not relevant\n\
Answer with the grade only, a single digit.";

const GRADE_SYSTEM_V2: &str = "You are a search quality rater for an enterprise search engine. \
Employees search for documents by topic, and also by who wrote them, their file name or their \
folder. Given a search query and a document with its metadata, rate how relevant the document is \
to the query:\n\
3 = perfectly relevant: the document is exactly what the query looks for, topic and any author, \
file name or path the query names\n\
2 = highly relevant: the document answers the query in large part\n\
1 = related: on the topic of the query, but does not answer it, or the query names an author or \
path the document does not have\n\
0 = not relevant\n\
Answer with the grade only, a single digit.";

/// The chat messages of the `grade-v1` prompt for a pair: the one definition of the grading
/// prompt, shared by the local decoder grader and the API teacher (`labelfleet-openai`).
/// `sanitize` strips whatever the model would read as control tokens from user text (the local
/// grader passes its tokenizer's `sanitize`). The document body goes in whole; a caller with a
/// token budget cuts it first.
pub fn grade_messages(
    pair: &Pair,
    n_grades: usize,
    sanitize: impl Fn(&str) -> String,
) -> Vec<ChatMessage> {
    grade_messages_for(GradePrompt::V1, pair, n_grades, sanitize)
}

/// The chat messages of a pair for the given prompt version.
pub fn grade_messages_for(
    prompt: GradePrompt,
    pair: &Pair,
    n_grades: usize,
    sanitize: impl Fn(&str) -> String,
) -> Vec<ChatMessage> {
    let body = sanitize(pair.body.trim());
    grade_messages_with_body(prompt, pair, n_grades, &sanitize, &body)
}

/// [`grade_messages_for`] with `body` put in place as it is: already sanitized, or a marker
/// that the local engine splits the rendered prompt on, to tokenize the body apart.
pub fn grade_messages_with_body(
    prompt: GradePrompt,
    pair: &Pair,
    n_grades: usize,
    sanitize: &dyn Fn(&str) -> String,
    body: &str,
) -> Vec<ChatMessage> {
    let user = format!(
        "Query: {}\n\nDocument:\n{}{}\n\nGrade (0-{}):",
        sanitize(pair.query.trim()),
        sanitize(&document_header(pair)),
        body,
        n_grades.saturating_sub(1)
    );
    vec![
        ChatMessage::system(prompt.system()),
        ChatMessage::user(user),
    ]
}

// ---------------------------------------------------------------------------------------------
// Query synthesis

/// Prompt version of topic queries: a query that finds the document by its topic.
pub const QUERY_PROMPT_VERSION: &str = "query-v1";

const QUERY_SYSTEM: &str =
    "You write the search queries that employees type into their company's internal search engine.";

/// Prompt version of metadata queries: a query that finds the document by one of its metadata
/// fields (author, path, file name, source) as well as its topic.
pub const METADATA_QUERY_PROMPT_VERSION: &str = "query-meta-v1";

/// The chat messages of the `query-v1` prompt for a document: the one definition of the query
/// synthesis prompt, shared by the local engine and the API teacher (`labelfleet-openai`).
/// `sanitize` strips whatever the model would read as control tokens from user text. The body
/// goes in whole; a caller with a token budget cuts it first.
pub fn query_messages(doc: &SeedDocument, sanitize: impl Fn(&str) -> String) -> Vec<ChatMessage> {
    let body = sanitize(doc.body.trim());
    query_messages_with_body(doc, &QueryIntent::Topic, &sanitize, &body)
}

/// The chat messages for a query of the given intent (`query-v1` or `query-meta-v1`).
pub fn intent_messages(
    doc: &SeedDocument,
    intent: &QueryIntent,
    sanitize: impl Fn(&str) -> String,
) -> Vec<ChatMessage> {
    let body = sanitize(doc.body.trim());
    query_messages_with_body(doc, intent, &sanitize, &body)
}

/// [`intent_messages`] with `body` put in place as it is: already sanitized, or a marker that
/// the local engine splits the rendered prompt on, to cut the body to its token budget.
pub fn query_messages_with_body(
    doc: &SeedDocument,
    intent: &QueryIntent,
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
    let user = match intent {
        QueryIntent::Topic => format!(
            "Here is a document from the company intranet.\n\n{header}{body}\n\n\
             Write one short search query (2 to 10 words) that an employee looking for this document \
             would type. Reply with the query only."
        ),
        QueryIntent::Metadata { field } => {
            let value = doc.metadata.get(field).map(|v| sanitize(v.trim())).unwrap_or_default();
            format!(
                "Here is a document from the company intranet.\n\n{header}{body}\n\n\
                 Write one short search query (2 to 10 words) that an employee would type to find \
                 this document by its {field} ({value}) and its topic. The query must contain the \
                 {field}. Reply with the query only."
            )
        }
    };
    vec![ChatMessage::system(QUERY_SYSTEM), ChatMessage::user(user)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatTemplate;

    #[test]
    fn grade_prompt_bytes_are_grade_v1() {
        // The prompt version is a promise: these bytes may only change with a new version.
        let pair = Pair {
            id: "p".into(),
            query: " vpn setup ".into(),
            title: Some("IT guide".into()),
            body: " Install the client. <|im_end|> ".into(),
            metadata: [("author".to_string(), "Jane Doe".to_string())].into(),
        };
        let messages = grade_messages(&pair, 4, |s| s.replace("<|im_end|>", ""));
        let text = ChatTemplate::chatml().render(&messages, true).unwrap();
        let expected = format!(
            "<|im_start|>system\n{GRADE_SYSTEM}<|im_end|>\n<|im_start|>user\nQuery: vpn setup\n\n\
             Document:\nTitle: IT guide\nauthor: Jane Doe\nInstall the client. \n\nGrade (0-3):\
             <|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(text, expected);
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
        let text = ChatTemplate::chatml().render(&messages, true).unwrap();
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
    fn grade_prompt_versions_parse_and_serialize_by_name() {
        assert_eq!(GradePrompt::parse("").unwrap(), GradePrompt::V1);
        assert_eq!(GradePrompt::parse("grade-v2").unwrap(), GradePrompt::V2);
        assert_eq!(
            GradePrompt::parse("grade-v9").unwrap_err().to_string(),
            "grade prompt `grade-v9` is not known (known: grade-v1, grade-v2)"
        );
        assert_eq!(GRADE_PROMPT_VERSION, GradePrompt::default().version());
        for p in GradePrompt::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.version()));
            assert_eq!(serde_json::from_str::<GradePrompt>(&json).unwrap(), p);
        }
    }

    #[test]
    fn grade_v2_has_its_own_system_turn_and_the_same_user_turn() {
        let pair = Pair {
            id: "p".into(),
            query: "q".into(),
            title: None,
            body: "b".into(),
            metadata: Default::default(),
        };
        let v1 = grade_messages(&pair, 4, |s| s.to_string());
        let v2 = grade_messages_for(GradePrompt::V2, &pair, 4, |s| s.to_string());
        assert_eq!(v2[0].content, GRADE_SYSTEM_V2);
        assert_ne!(v1[0], v2[0]);
        assert_eq!(v1[1], v2[1]);
    }

    #[test]
    fn sanitize_applies_to_user_text_and_the_marker_body_goes_in_as_is() {
        let pair = Pair {
            id: "p".into(),
            query: "a<|x|>b".into(),
            title: Some("t<|x|>".into()),
            body: "body<|x|>".into(),
            metadata: Default::default(),
        };
        let strip = |s: &str| s.replace("<|x|>", "");
        let m = grade_messages(&pair, 4, strip);
        assert_eq!(
            m[1].content,
            "Query: ab\n\nDocument:\nTitle: t\nbody\n\nGrade (0-3):"
        );
        let marked = grade_messages_with_body(GradePrompt::V1, &pair, 4, &strip, "@@");
        assert_eq!(
            marked[1].content,
            "Query: ab\n\nDocument:\nTitle: t\n@@\n\nGrade (0-3):"
        );
    }
}
