//! Chat messages and the chat templates that render them to prompt text: a model's own Jinja
//! template rendered with minijinja, no tokenizer (the local engine reads the template from the
//! model's `tokenizer_config.json`; the API teacher's server applies its own).

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

/// How a model turns chat messages into prompt text: its own Jinja chat template (from
/// `tokenizer_config.json` or `chat_template.jinja`), rendered with minijinja the way
/// `transformers`' `apply_chat_template` renders it (blocks trimmed and left-stripped, Python
/// string methods, `raise_exception`, `bos_token`/`eos_token`); or plain text for a model
/// without one. A test checks the bytes against Python for every family we run.
#[derive(Clone)]
pub enum ChatTemplate {
    Jinja(Box<JinjaChat>),
    /// No chat template: messages are joined as plain text.
    Plain,
}

/// A compiled Jinja chat template and what it needs to render.
#[derive(Clone)]
pub struct JinjaChat {
    source: String,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The template refuses a `system` turn (Mistral's raises): the system text then opens the
    /// first user turn, separated by a blank line.
    folds_system: bool,
    end_of_turn: Option<&'static str>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatTemplate::Jinja(j) => f
                .debug_struct("Jinja")
                .field("bytes", &j.source.len())
                .field("folds_system", &j.folds_system)
                .field("end_of_turn", &j.end_of_turn)
                .finish(),
            ChatTemplate::Plain => f.write_str("Plain"),
        }
    }
}

impl PartialEq for ChatTemplate {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ChatTemplate::Jinja(a), ChatTemplate::Jinja(b)) => {
                a.source == b.source && a.bos_token == b.bos_token && a.eos_token == b.eos_token
            }
            (ChatTemplate::Plain, ChatTemplate::Plain) => true,
            _ => false,
        }
    }
}

/// A chat template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template does not compile: {0}")]
    Compile(String),
    #[error("chat template fails to render: {0}")]
    Render(String),
}

/// ChatML without a default system turn: the format of SmolLM2's and Qwen2's templates.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

/// The stop marker of the families we know, found in the template's text.
fn end_of_turn_of(source: &str) -> Option<&'static str> {
    ["<|im_end|>", "<|eot_id|>", "<|end|>"]
        .into_iter()
        .find(|m| source.contains(m))
}

impl ChatTemplate {
    /// The template of a model: its Jinja source (`None`: plain text) and special tokens.
    pub fn from_jinja(
        source: Option<&str>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatTemplateError> {
        let Some(source) = source else {
            return Ok(ChatTemplate::Plain);
        };
        let mut env = minijinja::Environment::new();
        // as transformers compiles chat templates
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatTemplateError::Compile(format!("{e:#}")))?;
        let mut chat = JinjaChat {
            source: source.to_string(),
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
            folds_system: false,
            end_of_turn: end_of_turn_of(source),
        };
        // Our prompts open with a system turn: a template that refuses one gets it folded in.
        let probe = [ChatMessage::system("s"), ChatMessage::user("u")];
        if chat.render_raw(&probe, true).is_err() {
            chat.folds_system = true;
            chat.render(&probe, true)?;
        }
        Ok(ChatTemplate::Jinja(Box::new(chat)))
    }

    /// ChatML (SmolLM2, Qwen2) with no default system turn.
    pub fn chatml() -> Self {
        Self::from_jinja(Some(CHATML_TEMPLATE), None, Some("<|im_end|>"))
            .expect("the built-in ChatML template renders")
    }

    /// Renders messages to prompt text, ending with the opening of an assistant turn when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        match self {
            ChatTemplate::Jinja(j) => j.render(messages, add_generation_prompt),
            ChatTemplate::Plain => Ok(messages
                .iter()
                .map(|m| format!("{}\n\n", m.content))
                .collect()),
        }
    }

    /// The token that ends an assistant turn, if the format has one.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::Jinja(j) => j.end_of_turn,
            ChatTemplate::Plain => None,
        }
    }
}

impl JinjaChat {
    fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        if !self.folds_system {
            return self.render_raw(messages, add_generation_prompt);
        }
        let system: Vec<&str> = messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        let mut folded: Vec<ChatMessage> = messages
            .iter()
            .filter(|m| m.role != "system")
            .cloned()
            .collect();
        if let Some(first) = folded.iter_mut().find(|m| m.role == "user") {
            if !system.is_empty() {
                first.content = format!("{}\n\n{}", system.join("\n\n"), first.content);
            }
        }
        self.render_raw(&folded, add_generation_prompt)
    }

    fn render_raw(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role, content => m.content })
            .collect();
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Compile(format!("{e:#}")))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| ChatTemplateError::Render(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL_LIKE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn a_default_system_turn_only_when_there_is_none() {
        let t = ChatTemplate::from_jinja(Some(SMOL_LIKE), None, Some("<|im_end|>")).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("hi")], true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[ChatMessage::system("X"), ChatMessage::user("hi")], false)
                .unwrap(),
            "<|im_start|>system\nX<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        );
        assert_eq!(t.end_of_turn(), Some("<|im_end|>"));
    }

    #[test]
    fn a_template_that_refuses_system_turns_gets_them_folded_into_the_first_user_turn() {
        let inst = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
        let t = ChatTemplate::from_jinja(Some(inst), Some("<s>"), Some("</s>")).unwrap();
        assert_eq!(
            t.render(
                &[ChatMessage::system("Rate."), ChatMessage::user("q")],
                true
            )
            .unwrap(),
            "<s>[INST] Rate.\n\nq [/INST]"
        );
        // its assistant turns end with the eos token, a stop token of every model anyway
        assert_eq!(t.end_of_turn(), None);
    }

    #[test]
    fn python_string_methods_and_errors_are_reported() {
        let t = ChatTemplate::from_jinja(
            Some("{% for m in messages %}{{ m['content'].strip() | upper }}{% endfor %}"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("  a b ")], false).unwrap(),
            "A B"
        );
        assert!(matches!(
            ChatTemplate::from_jinja(Some("{% for %}"), None, None),
            Err(ChatTemplateError::Compile(_))
        ));
        assert_eq!(
            ChatTemplate::from_jinja(None, None, None).unwrap(),
            ChatTemplate::Plain
        );
    }
}
