//! The ids that end up in object-store keys and etcd keys (job, corpus, task, worker and
//! checkpoint ids, idempotency keys): bounded length and a plain character set, so no id can
//! climb out of its prefix (`..`, `/`) or smuggle control characters into a key or a log.

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Checks one id; the error names the field and says what is wrong.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field}: empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{field}: {} bytes, longer than the {MAX_ID_LEN} allowed",
            id.len()
        ));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(format!(
            "{field}: `{}` may not start with `.` or `-`",
            printable(id)
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "{field}: `{}` holds {c:?}; ids use letters, digits and - _ . : only",
            printable(id)
        ));
    }
    Ok(())
}

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 256;

/// Checks an idempotency key: like an id, but `/` may join plain segments (a corpus job keys
/// its stages `job/stage/content`). No empty, `.` or `..` segment, so a key stays a name.
pub fn check_key(field: &str, key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "{field}: {} bytes, longer than the {MAX_KEY_LEN} allowed",
            key.len()
        ));
    }
    for segment in key.split('/') {
        check_id(field, segment).map_err(|e| match segment.is_empty() {
            true => format!("{field}: `{}` has an empty segment", printable(key)),
            false => e,
        })?;
    }
    Ok(())
}

/// An id for a message: at most 64 characters, control characters escaped.
fn printable(id: &str) -> String {
    id.chars().take(64).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_pass_and_traversal_does_not() {
        for ok in ["job-1732-00af", "corpus-9f3", "w:0", "ckpt.v1_2"] {
            assert!(check_id("id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../etc", "a/b", "a\\b", "-rf", "a\0b", "é"] {
            let err = check_id("spec.corpus_id", bad).unwrap_err();
            assert!(err.starts_with("spec.corpus_id: "), "{err}");
        }
        assert!(check_id("id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn keys_may_join_plain_segments() {
        assert!(check_key("key", "job-1-00af/queries/c-113f0256e8b54c37").is_ok());
        for bad in ["../../leader", "a//b", "/a", "a/", "a/../b", "a/./b", "a b"] {
            assert!(check_key("request.idempotency_key", bad).is_err(), "{bad}");
        }
    }
}
