//! What the end-to-end CLI tests share: the Cranfield data and a small slice of its corpus.
#![allow(dead_code)] // each test binary uses a part of it

use std::path::{Path, PathBuf};

/// `../shared/data` (or `LABELFLEET_DATA`), checked to hold Cranfield.
pub fn data_dir() -> PathBuf {
    let d = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        d.join("cranfield/corpus.jsonl").is_file(),
        "Cranfield not found under {}",
        d.display()
    );
    d
}

/// The first `n` Cranfield documents as a JSONL file in `dir`: a slice that keeps an
/// end-to-end run near two minutes on two cores.
pub fn cranfield_slice(dir: &Path, n: usize) -> PathBuf {
    let corpus = std::fs::read_to_string(data_dir().join("cranfield/corpus.jsonl")).unwrap();
    let slice = dir.join("corpus.jsonl");
    std::fs::write(
        &slice,
        corpus.lines().take(n).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    slice
}
