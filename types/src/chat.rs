//! Chat messages and the chat templates that render them to prompt text: pure string
//! building, no tokenizer (the local engine detects a model's template from its
//! `tokenizer_config.json`; the API teacher's server applies its own).

/// One turn of a chat: its role (`system`, `user`, `assistant`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A `system` turn.
    pub fn system(c: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: c.into(),
        }
    }
    /// A `user` turn.
    pub fn user(c: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: c.into(),
        }
    }
    /// An `assistant` turn.
    pub fn assistant(c: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".into(),
            content: c.into(),
        }
    }
}

/// The chat formats of the instruct models we run. Detected from the model's Jinja template, then
/// rendered natively (no Jinja engine), which keeps the prompt bytes identical to
/// `apply_chat_template` for the families below; a test checks that against Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n...<|im_end|>\n` (SmolLM2, Qwen2). Some templates insert a default
    /// system message when the conversation has none.
    ChatMl { default_system: Option<String> },
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>` (Llama 3).
    Llama3,
    /// `<|role|>\n...<|end|>\n` (Phi-3).
    Phi3,
    /// No chat template: messages are joined as plain text.
    Plain,
}

impl ChatTemplate {
    /// The format of a model's Jinja chat template (`None`: the model has none).
    pub fn detect(jinja: Option<&str>) -> Self {
        let Some(t) = jinja else {
            return ChatTemplate::Plain;
        };
        if t.contains("<|im_start|>") {
            let marker = "<|im_start|>system\n";
            let default_system = t.find(marker).and_then(|i| {
                let rest = &t[i + marker.len()..];
                rest.find("<|im_end|>").map(|j| rest[..j].to_string())
            });
            // A template that only renders the caller's system message has `message['content']`
            // there, not a literal default.
            let default_system = default_system.filter(|s| !s.contains("{{") && !s.contains('\''));
            ChatTemplate::ChatMl { default_system }
        } else if t.contains("<|start_header_id|>") {
            ChatTemplate::Llama3
        } else if t.contains("<|user|>") && t.contains("<|end|>") {
            ChatTemplate::Phi3
        } else {
            ChatTemplate::Plain
        }
    }

    /// Renders messages to prompt text, ending with the opening of an assistant turn when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                if let (Some(d), Some(first)) = (default_system, messages.first()) {
                    if first.role != "system" {
                        s.push_str(&format!("<|im_start|>system\n{d}<|im_end|>\n"));
                    }
                }
                for m in messages {
                    s.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role, m.content
                    ));
                }
                if add_generation_prompt {
                    s.push_str("<|im_start|>assistant\n");
                }
            }
            ChatTemplate::Llama3 => {
                s.push_str("<|begin_of_text|>");
                for m in messages {
                    s.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    ));
                }
                if add_generation_prompt {
                    s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            ChatTemplate::Phi3 => {
                for m in messages {
                    s.push_str(&format!("<|{}|>\n{}<|end|>\n", m.role, m.content));
                }
                if add_generation_prompt {
                    s.push_str("<|assistant|>\n");
                }
            }
            ChatTemplate::Plain => {
                for m in messages {
                    s.push_str(&m.content);
                    s.push_str("\n\n");
                }
            }
        }
        s
    }

    /// The token that ends an assistant turn, if the format has one.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::ChatMl { .. } => Some("<|im_end|>"),
            ChatTemplate::Llama3 => Some("<|eot_id|>"),
            ChatTemplate::Phi3 => Some("<|end|>"),
            ChatTemplate::Plain => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_chat_formats() {
        let chatml = "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}\
                      <|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n{% endif %}\
                      <|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";
        assert_eq!(
            ChatTemplate::detect(Some(chatml)),
            ChatTemplate::ChatMl {
                default_system: Some("You are a helpful AI assistant".into())
            }
        );
        assert_eq!(
            ChatTemplate::detect(Some("<|start_header_id|>")),
            ChatTemplate::Llama3
        );
        assert_eq!(
            ChatTemplate::detect(Some("<|user|>\n{{ c }}<|end|>")),
            ChatTemplate::Phi3
        );
        assert_eq!(ChatTemplate::detect(None), ChatTemplate::Plain);
    }

    #[test]
    fn chatml_adds_the_default_system_turn_only_when_there_is_none() {
        let t = ChatTemplate::ChatMl {
            default_system: Some("S".into()),
        };
        assert_eq!(
            t.render(&[ChatMessage::user("hi")], true),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[ChatMessage::system("X"), ChatMessage::user("hi")], false),
            "<|im_start|>system\nX<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        );
        assert_eq!(t.end_of_turn(), Some("<|im_end|>"));
    }
}
