//! Where labelfleet keeps its venv, models and caches.

use std::path::PathBuf;

/// Where labelfleet keeps its venv, models and caches: `$LABELFLEET_HOME`, else
/// `~/.cache/labelfleet` (what `scripts/setup.sh` fills).
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("LABELFLEET_HOME") {
        return h.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("labelfleet")
}

/// The folder of a bundled model by short name (`smollm2`, `minilm`), or the path itself.
pub fn resolve_model(name_or_path: &str) -> PathBuf {
    match name_or_path {
        "smollm2" | "smollm2-135m-instruct" => home_dir().join("models/smollm2-135m-instruct"),
        "minilm" | "all-minilm-l6-v2" => home_dir().join("models/all-minilm-l6-v2"),
        other => PathBuf::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_pass_through_and_short_names_resolve_under_home() {
        assert_eq!(resolve_model("/m/x"), PathBuf::from("/m/x"));
        assert_eq!(
            resolve_model("smollm2"),
            home_dir().join("models/smollm2-135m-instruct")
        );
        assert_eq!(resolve_model("minilm"), resolve_model("all-minilm-l6-v2"));
    }
}
