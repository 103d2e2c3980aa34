//! JSON Lines input with errors that name the file, line and field. A bad line never stops the
//! good ones from being read: callers get every record or error, in order.

use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{file}:{line}: not valid UTF-8")]
    Utf8 { file: String, line: usize },
    #[error("{file}:{line}: {message}")]
    Record {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// One record with the line it came from.
pub struct Line<T> {
    pub line: usize,
    pub value: T,
}

/// Reads `path` (or stdin for `-`), yielding each non-blank line parsed as `T`.
pub fn read<T: DeserializeOwned>(
    path: &Path,
) -> Result<Vec<Result<Line<T>, JsonlError>>, JsonlError> {
    Ok(lines(path)?.collect())
}

/// Like [`read`], one line at a time: the file is never held in memory. An error reading the
/// file ends the iteration with that error.
pub fn lines<T: DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Line<T>, JsonlError>> + Send + 'static, JsonlError> {
    let file = path.display().to_string();
    let reader: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|source| JsonlError::Io {
            file: file.clone(),
            source,
        })?)
    };
    let mut reader = BufReader::new(reader);
    let mut buf = vec![];
    let mut line = 0;
    let mut done = false;
    Ok(std::iter::from_fn(move || loop {
        if done {
            return None;
        }
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(source) => {
                done = true;
                return Some(Err(JsonlError::Io {
                    file: file.clone(),
                    source,
                }));
            }
        };
        if n == 0 {
            return None;
        }
        line += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            return Some(Err(JsonlError::Utf8 {
                file: file.clone(),
                line,
            }));
        };
        if text.trim().is_empty() {
            continue;
        }
        let text = text.trim_end_matches(['\n', '\r']);
        return Some(
            serde_json::from_str::<T>(text)
                .map(|value| Line { line, value })
                .map_err(|e| {
                    // serde counts lines inside this one record; the file line is ours, keep the column
                    let message = e.to_string().replace(" at line 1 column", " at column");
                    JsonlError::Record {
                        file: file.clone(),
                        line,
                        message,
                    }
                }),
        );
    }))
}

/// A JSONL writer that flushes on drop.
pub struct Writer {
    inner: std::io::BufWriter<Box<dyn std::io::Write>>,
}

impl Writer {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let w: Box<dyn std::io::Write> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::File::create(path)?)
        };
        Ok(Writer {
            inner: std::io::BufWriter::new(w),
        })
    }
    pub fn write<T: serde::Serialize>(&mut self, v: &T) -> std::io::Result<()> {
        use std::io::Write;
        serde_json::to_writer(&mut self.inner, v)?;
        self.inner.write_all(b"\n")
    }
    pub fn finish(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct R {
        id: String,
    }

    #[test]
    fn bad_lines_are_named_and_good_lines_kept() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"id\":\"a\"}\n{not json\n\n{\"x\":1}\n\xff\xfe\n{\"id\":\"b\"}\n")
            .unwrap();
        let rows = read::<R>(f.path()).unwrap();
        let ok: Vec<String> = rows
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|l| l.value.id.clone())
            .collect();
        assert_eq!(ok, vec!["a", "b"]);
        let errs: Vec<String> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 3);
        assert!(errs[0].contains(":2:"), "{}", errs[0]);
        assert!(errs[0].contains("at column"), "{}", errs[0]);
        assert!(
            errs[1].contains(":4:") && errs[1].contains("missing field `id`"),
            "{}",
            errs[1]
        );
        assert!(errs[2].contains(":5: not valid UTF-8"), "{}", errs[2]);
    }
}
