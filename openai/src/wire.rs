//! The OpenAI chat-completions request and the parts of the response we read. Unknown response
//! fields are ignored, so servers that add their own (llama.cpp's `timings`) parse too.

use labelfleet_types::ChatMessage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
pub(crate) struct WireMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub max_tokens: u32,
    pub temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

impl<'a> ChatRequest<'a> {
    pub fn new(model: &'a str, messages: &'a [ChatMessage], max_tokens: u32) -> Self {
        ChatRequest {
            model,
            messages: messages
                .iter()
                .map(|m| WireMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
            max_tokens,
            temperature: 0.0,
            top_p: None,
            seed: None,
            logprobs: None,
            top_logprobs: None,
        }
    }

    /// Bytes of message text: the base of the token estimate made before sending.
    pub fn text_bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum()
    }
}

/// A chat completion, reduced to what labelfleet reads; it is also what the cache stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChatResponse {
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Choice {
    pub message: ResponseMessage,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResponseMessage {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopLogprob {
    pub token: String,
    pub logprob: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// `error.message` of an OpenAI-style error body, else the body itself (cut short).
pub(crate) fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            match e {
                serde_json::Value::String(s) => Some(s.clone()),
                _ => e.get("message")?.as_str().map(String::from),
            }
        });
    match from_json {
        Some(m) => m,
        None if body.trim().is_empty() => "(empty body)".into(),
        None => crate::error::excerpt(body.trim(), 300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_and_llama_cpp_error_bodies() {
        assert_eq!(
            error_message(
                r#"{"error":{"code":400,"message":"context too long","type":"invalid_request_error"}}"#
            ),
            "context too long"
        );
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn request_leaves_out_what_is_not_set() {
        let msgs = [ChatMessage::system("s"), ChatMessage::user("u")];
        let r = ChatRequest::new("m", &msgs, 1);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"max_tokens":1,"temperature":0.0}"#
        );
    }
}
