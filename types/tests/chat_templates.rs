//! labelfleet renders every supported family's chat template with the same bytes as
//! `transformers`' `apply_chat_template` (jinja2): SmolLM2's own template, read from the
//! installed model, and the Qwen2, Llama 3, Mistral and Phi-3 formats (fixtures). Needs the venv
//! of `scripts/setup.sh`.

use labelfleet_types::{ChatMessage, ChatTemplate};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

struct Family {
    name: &'static str,
    template: String,
    bos: &'static str,
    eos: &'static str,
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat_templates")
        .join(format!("{name}.jinja"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn families() -> Vec<Family> {
    let config = labelfleet_types::resolve_model("smollm2").join("tokenizer_config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", config.display())),
    )
    .unwrap();
    vec![
        Family {
            name: "smollm2",
            template: config["chat_template"].as_str().expect("template").into(),
            bos: "<|im_start|>",
            eos: "<|im_end|>",
        },
        Family {
            name: "qwen2",
            template: fixture("qwen2"),
            bos: "",
            eos: "<|im_end|>",
        },
        Family {
            name: "llama3",
            template: fixture("llama3"),
            bos: "<|begin_of_text|>",
            eos: "<|eot_id|>",
        },
        Family {
            name: "mistral",
            template: fixture("mistral"),
            bos: "<s>",
            eos: "</s>",
        },
        Family {
            name: "phi3",
            template: fixture("phi3"),
            bos: "<s>",
            eos: "<|endoftext|>",
        },
    ]
}

/// Conversations shaped as labelfleet's prompts (system + user), and others.
fn conversations() -> Vec<(Vec<ChatMessage>, bool)> {
    let grading = vec![
        ChatMessage::system("You rate search results.\nAnswer with one digit."),
        ChatMessage::user("Query: vpn  setup \n\nDocument:\nTitle: IT guide — Zürich {{ braces }}\n\nGrade (0-3):"),
    ];
    vec![
        (grading.clone(), true),
        (vec![ChatMessage::user("  only a user turn  ")], true),
        (
            vec![
                ChatMessage::system("S"),
                ChatMessage::user("first"),
                ChatMessage::assistant("an answer"),
                ChatMessage::user("second"),
            ],
            false,
        ),
        (grading, false),
    ]
}

fn python() -> PathBuf {
    labelfleet_types::home_dir().join("venv/bin/python")
}

#[test]
fn every_family_renders_as_transformers_renders_it() {
    let mut cases = vec![];
    let mut ours = vec![];
    for f in families() {
        let template = ChatTemplate::from_jinja(Some(&f.template), Some(f.bos), Some(f.eos))
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        for (i, (messages, add_generation_prompt)) in conversations().into_iter().enumerate() {
            ours.push((
                format!("{} conversation {i}", f.name),
                template
                    .render(&messages, add_generation_prompt)
                    .unwrap_or_else(|e| panic!("{} conversation {i}: {e}", f.name)),
            ));
            cases.push(serde_json::json!({
                "template": f.template, "bos_token": f.bos, "eos_token": f.eos,
                "add_generation_prompt": add_generation_prompt,
                "messages": messages.iter()
                    .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                    .collect::<Vec<_>>(),
            }));
        }
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/render_chat_templates.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", python().display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::Value::Array(cases).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());
    for ((case, mine), reference) in ours.iter().zip(&theirs) {
        let reference = reference
            .as_str()
            .unwrap_or_else(|| panic!("{case}: transformers could not render it: {reference}"));
        assert_eq!(mine, reference, "{case}: the bytes differ");
    }
    assert_eq!(ours.len(), 20);
}

#[test]
fn stop_markers_and_the_folded_system_turn() {
    let f = families();
    let by = |n: &str| f.iter().find(|x| x.name == n).unwrap();
    let load = |n: &str| {
        let x = by(n);
        ChatTemplate::from_jinja(Some(&x.template), Some(x.bos), Some(x.eos)).unwrap()
    };
    assert_eq!(load("smollm2").end_of_turn(), Some("<|im_end|>"));
    assert_eq!(load("llama3").end_of_turn(), Some("<|eot_id|>"));
    assert_eq!(load("phi3").end_of_turn(), Some("<|end|>"));
    let mistral = load("mistral");
    let text = mistral
        .render(
            &[ChatMessage::system("Rate."), ChatMessage::user("q")],
            true,
        )
        .unwrap();
    assert_eq!(text, "<s>[INST] Rate.\n\nq [/INST]");
}
