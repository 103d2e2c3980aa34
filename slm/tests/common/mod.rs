//! Shared helpers of the engine's integration tests: where the models and references are.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use tch::Tensor;

pub fn home() -> PathBuf {
    labelfleet_slm::home_dir()
}

/// A bundled model folder; panics with the fix when set-up has not run.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = labelfleet_slm::resolve_model(name);
    assert!(
        dir.join("config.json").is_file(),
        "model `{name}` not found at {}: run `bash scripts/setup.sh` (make test does)",
        dir.display()
    );
    dir
}

pub fn reference(name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = home().join("reference");
    let st = dir.join(format!("{name}.safetensors"));
    assert!(
        st.is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        st.display()
    );
    let tensors = Tensor::read_safetensors(&st)
        .expect("reference safetensors")
        .into_iter()
        .collect();
    let meta =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (tensors, meta)
}

pub fn python() -> PathBuf {
    home().join("venv/bin/python")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}
