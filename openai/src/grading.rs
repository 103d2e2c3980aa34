//! Grading a (query, document) pair through the API with the local engine's `grade-v1` prompt.
//!
//! The request asks for one token at temperature 0 with the `top_logprobs` of the answer
//! position. The grade distribution is the softmax over the grade tokens found there, which is
//! what the local decoder grader computes from the grade logits (a softmax over a subset of
//! the vocabulary equals the full softmax renormalised over that subset). A server that gives
//! no logprobs, or none for a grade token, is read from the answer text instead: a one-hot
//! distribution on the digit it wrote.

use crate::client::ApiClient;
use crate::error::ApiError;
use crate::usage::Tally;
use crate::wire::{ChatRequest, ChatResponse};
use futures::StreamExt;
use labelfleet_types::prompt::{grade_messages_for, GradePrompt};
use labelfleet_types::{ChatMessage, Grading, InputLimits, Pair};
use serde::{Deserialize, Serialize};

/// How a grade was read from the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradeSource {
    /// From the `top_logprobs` of the answer token: a full distribution.
    Logprobs,
    /// From the digit in the answer text: one-hot.
    Parsed,
}

impl GradeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            GradeSource::Logprobs => "logprobs",
            GradeSource::Parsed => "parsed",
        }
    }
}

/// An API grade: the same [`Grading`] the local engine returns, and how it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiGrading {
    #[serde(flatten)]
    pub grading: Grading,
    pub source: GradeSource,
    /// Whether the document body was cut to `max_document_bytes` for the prompt.
    pub truncated: bool,
}

/// The sanitizer of user text sent to a server: it strips every `<|...|>` special-token string
/// (it lives in `labelfleet-types`, next to the prompts it feeds).
pub use labelfleet_types::sanitize::strip_special_tokens;

/// Cuts `text` to at most `max_bytes`, on a character boundary.
pub(crate) fn clip(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

fn input_error(record: &str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Input {
        record: record.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Checks a document's text before it goes into a prompt: not empty (a body or a title), and
/// every field within the engine's input limit. Errors name the record and the field.
pub(crate) fn check_document(
    record: &str,
    title: Option<&str>,
    body: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if body.trim().is_empty() && title.is_none_or(|t| t.trim().is_empty()) {
        return Err(input_error(
            record,
            "body",
            "empty document (no body and no title)",
        ));
    }
    check_field(record, "body", body)?;
    if let Some(t) = title {
        check_field(record, "title", t)?;
    }
    for (k, v) in metadata {
        check_field(record, &format!("metadata.{k}"), v)?;
    }
    Ok(())
}

/// Checks a field against the engine's input limit, as the local grader does.
pub(crate) fn check_field(record: &str, field: &str, text: &str) -> Result<(), ApiError> {
    let max = InputLimits::default().max_field_bytes;
    if text.len() > max {
        return Err(input_error(
            record,
            field,
            format!("{} bytes, over the limit of {max} bytes", text.len()),
        ));
    }
    Ok(())
}

/// The messages of the `prompt` version for a pair, with the body cut to `max_document_bytes`;
/// and whether it was cut. Errors name the pair and field, like the local grader's.
pub fn grade_request_messages(
    pair: &Pair,
    prompt: GradePrompt,
    num_grades: usize,
    max_document_bytes: usize,
) -> Result<(Vec<ChatMessage>, bool), ApiError> {
    if pair.id.trim().is_empty() {
        return Err(input_error("<no id>", "id", "empty"));
    }
    if pair.query.trim().is_empty() {
        return Err(input_error(&pair.id, "query", "empty"));
    }
    check_field(&pair.id, "query", &pair.query)?;
    check_document(&pair.id, pair.title.as_deref(), &pair.body, &pair.metadata)?;
    let (body, truncated) = clip(pair.body.trim(), max_document_bytes);
    let clipped = Pair {
        body: body.to_string(),
        ..pair.clone()
    };
    Ok((
        grade_messages_for(prompt, &clipped, num_grades, strip_special_tokens),
        truncated,
    ))
}

/// The grade distribution from the alternatives at the answer position: the entries whose
/// token, trimmed, is a grade label, softmax-renormalised over the grades. Several tokens of
/// one grade ("2", " 2") add up. A grade absent from the list gets 0. `None` when no
/// alternative is a grade.
pub fn distribution_from_logprobs(
    alternatives: &[(&str, f64)],
    labels: &[String],
) -> Option<Vec<f32>> {
    let mut per_grade: Vec<Vec<f64>> = vec![vec![]; labels.len()];
    for &(token, logprob) in alternatives {
        if !logprob.is_finite() {
            continue;
        }
        if let Some(g) = labels.iter().position(|l| l == token.trim()) {
            per_grade[g].push(logprob);
        }
    }
    let max = per_grade
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return None;
    }
    let mass: Vec<f64> = per_grade
        .iter()
        .map(|lps| lps.iter().map(|lp| (lp - max).exp()).sum())
        .collect();
    let total: f64 = mass.iter().sum();
    Some(mass.iter().map(|m| (m / total) as f32).collect())
}

/// The grade in an answer text: its first digit, which must stand alone and be a grade.
pub fn parse_grade(answer: &str, num_grades: usize) -> Option<usize> {
    let start = answer.find(|c: char| c.is_ascii_digit())?;
    let digits: String = answer[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let grade: usize = digits.parse().ok()?;
    (digits.len() == 1 && grade < num_grades).then_some(grade)
}

/// Reads the grade of a completion: logprobs when they hold a grade token, else the text.
pub(crate) fn grading_from_response(
    response: &ChatResponse,
    labels: &[String],
    record: &str,
) -> Result<(Grading, GradeSource), ApiError> {
    let choice = response
        .choices
        .first()
        .ok_or_else(|| ApiError::Malformed {
            record: record.to_string(),
            message: "`choices` is empty".into(),
            excerpt: String::new(),
        })?;
    let first = choice
        .logprobs
        .as_ref()
        .and_then(|l| l.content.as_ref())
        .and_then(|c| c.first());
    if let Some(first) = first {
        let mut alternatives: Vec<(&str, f64)> = first
            .top_logprobs
            .iter()
            .map(|t| (t.token.as_str(), t.logprob))
            .collect();
        if !alternatives.iter().any(|(t, _)| *t == first.token) {
            alternatives.push((&first.token, first.logprob));
        }
        if let Some(d) = distribution_from_logprobs(&alternatives, labels) {
            return Ok((Grading::from_distribution(d), GradeSource::Logprobs));
        }
    }
    let answer = choice.message.content.clone().unwrap_or_default();
    match parse_grade(&answer, labels.len()) {
        Some(g) => {
            let mut d = vec![0.0; labels.len()];
            d[g] = 1.0;
            Ok((Grading::from_distribution(d), GradeSource::Parsed))
        }
        None => Err(ApiError::Answer {
            record: record.to_string(),
            answer,
            message: format!(
                "no grade 0-{} in the answer{}",
                labels.len() - 1,
                if first.is_some() {
                    ", nor among its top logprobs"
                } else {
                    " (the server gave no logprobs)"
                }
            ),
        }),
    }
}

impl ApiClient {
    /// Grades one pair with the config's prompt version.
    pub async fn grade_pair(&self, pair: &Pair) -> Result<ApiGrading, ApiError> {
        self.grade_pair_with(pair, self.config().grade_prompt, None)
            .await
    }

    /// Grades one pair with the `prompt` version, booking the call in `tally` too.
    pub async fn grade_pair_with(
        &self,
        pair: &Pair,
        prompt: GradePrompt,
        tally: Option<&Tally>,
    ) -> Result<ApiGrading, ApiError> {
        let config = self.config();
        let (messages, truncated) =
            grade_request_messages(pair, prompt, config.num_grades, config.max_document_bytes)?;
        let mut request = ChatRequest::new(&config.model, &messages, 1);
        request.logprobs = Some(true);
        request.top_logprobs = Some(config.top_logprobs);
        let labels = config.grade_labels();
        let record = format!("pair {}", pair.id);
        let (grading, source) = self
            .complete(&record, &request, tally, |r| {
                grading_from_response(r, &labels, &record)
            })
            .await?;
        Ok(ApiGrading {
            grading,
            source,
            truncated,
        })
    }

    /// Grades pairs with up to `concurrency` requests in flight. The results are in input
    /// order, one per pair: a pair that fails does not stop the others. `on_done` is called
    /// as each pair finishes.
    pub async fn grade_pairs(
        &self,
        pairs: &[Pair],
        on_done: &(dyn Fn() + Sync),
    ) -> Vec<Result<ApiGrading, ApiError>> {
        self.grade_pairs_with(pairs, self.config().grade_prompt, None, on_done)
            .await
    }

    /// [`Self::grade_pairs`] with the `prompt` version, booking the calls in `tally` too (a
    /// worker grades each task with the task's prompt and reports what the task spent).
    pub async fn grade_pairs_with(
        &self,
        pairs: &[Pair],
        prompt: GradePrompt,
        tally: Option<&Tally>,
        on_done: &(dyn Fn() + Sync),
    ) -> Vec<Result<ApiGrading, ApiError>> {
        // the futures are made first: a stream's `map` closure over borrowed pairs would make
        // the whole future not `Send` (the compiler cannot prove it for a closure generic over
        // the borrow), and workers spawn it
        let calls: Vec<_> = pairs
            .iter()
            .map(|pair| async move {
                let result = self.grade_pair_with(pair, prompt, tally).await;
                on_done();
                result
            })
            .collect();
        futures::stream::iter(calls)
            .buffered(self.config().concurrency)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        (0..4).map(|g| g.to_string()).collect()
    }

    #[test]
    fn distribution_is_the_softmax_over_grade_tokens() {
        let alts = [
            ("2", (0.5f64).ln()),
            ("3", (0.2f64).ln()),
            ("The", (0.2f64).ln()),
            (" 2", (0.05f64).ln()),
            ("1", (0.05f64).ln()),
        ];
        let d = distribution_from_logprobs(&alts, &labels()).unwrap();
        // grade mass 0 : 0.05 : 0.55 : 0.2, renormalised over 0.8
        let want = [0.0, 0.0625, 0.6875, 0.25];
        for (g, w) in d.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{d:?}");
        }
        assert_eq!(
            distribution_from_logprobs(&[("Yes", -0.1)], &labels()),
            None
        );
        assert_eq!(distribution_from_logprobs(&[("7", -0.1)], &labels()), None);
    }

    #[test]
    fn grades_parse_from_the_first_lone_digit() {
        assert_eq!(parse_grade("2", 4), Some(2));
        assert_eq!(parse_grade(" Grade: 3.", 4), Some(3));
        assert_eq!(parse_grade("0 - not relevant", 4), Some(0));
        assert_eq!(parse_grade("7", 4), None);
        assert_eq!(parse_grade("10", 4), None);
        assert_eq!(parse_grade("relevant", 4), None);
    }

    #[test]
    fn request_messages_are_the_engines_grade_v1_prompt() {
        let pair = Pair {
            id: "q1-d2".into(),
            query: "vpn setup".into(),
            title: Some("IT guide".into()),
            body: "é".repeat(100),
            metadata: Default::default(),
        };
        let v1 = GradePrompt::V1;
        let (m, truncated) = grade_request_messages(&pair, v1, 4, 1000).unwrap();
        assert!(!truncated);
        assert_eq!(
            m,
            labelfleet_types::prompt::grade_messages(&pair, 4, |s| s.to_string())
        );
        let (m2, _) = grade_request_messages(&pair, GradePrompt::V2, 4, 1000).unwrap();
        assert_eq!(
            m2,
            grade_messages_for(GradePrompt::V2, &pair, 4, |s| s.to_string())
        );
        assert_ne!(m2, m);
        let (m, truncated) = grade_request_messages(&pair, v1, 4, 101).unwrap();
        assert!(truncated);
        assert!(m[1]
            .content
            .contains(&format!("{}\n\nGrade (0-3):", "é".repeat(50))));
        let empty = Pair {
            query: " ".into(),
            ..pair.clone()
        };
        let e = grade_request_messages(&empty, v1, 4, 1000).unwrap_err();
        assert_eq!(e.to_string(), "record q1-d2: field `query`: empty");
    }

    fn response(json: serde_json::Value) -> ChatResponse {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_logprobs_then_falls_back_to_the_text() {
        let with_logprobs = response(serde_json::json!({"choices": [{
            "message": {"content": "3"},
            "logprobs": {"content": [{"token": "3", "logprob": -0.1,
                "top_logprobs": [{"token": "3", "logprob": -0.1}, {"token": "2", "logprob": -2.5}]}]}
        }]}));
        let (g, s) = grading_from_response(&with_logprobs, &labels(), "pair p").unwrap();
        assert_eq!((g.grade, s), (3, GradeSource::Logprobs));
        assert!(g.distribution[2] > 0.05 && g.distribution[0] == 0.0);

        let no_logprobs = response(serde_json::json!({"choices": [{"message": {"content": "1"}}]}));
        let (g, s) = grading_from_response(&no_logprobs, &labels(), "pair p").unwrap();
        assert_eq!(
            (g.distribution, s),
            (vec![0.0, 1.0, 0.0, 0.0], GradeSource::Parsed)
        );

        let no_grade_token = response(serde_json::json!({"choices": [{
            "message": {"content": "The grade is 2"},
            "logprobs": {"content": [{"token": "The", "logprob": -0.1, "top_logprobs": []}]}
        }]}));
        let (g, s) = grading_from_response(&no_grade_token, &labels(), "pair p").unwrap();
        assert_eq!((g.grade, s), (2, GradeSource::Parsed));

        let nothing = response(serde_json::json!({"choices": [{"message": {"content": "Sure!"}}]}));
        let e = grading_from_response(&nothing, &labels(), "pair q9-d3").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("pair q9-d3") && msg.contains("\"Sure!\""),
            "{msg}"
        );
    }
}
