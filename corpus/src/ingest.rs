//! Corpus ingestion. Every record is validated on its own: a bad one is reported with its line
//! (or file), id and field, and never stops or alters the records accepted around it.

use crate::{CorpusError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One enterprise document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Document {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Path or file name in the source system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// Any other fields of the record, kept as they came.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Document {
    /// Content hash (id, title, body, author, path): the key that tells whether work done on a
    /// document is still valid.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            Some(&self.id),
            self.title.as_ref(),
            Some(&self.body),
            self.author.as_ref(),
            self.path.as_ref(),
        ] {
            h.update(part.map(String::as_str).unwrap_or("").as_bytes());
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A record that was not accepted, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    /// File and line (`corpus.jsonl:12`) or file path.
    pub location: String,
    pub id: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(id) = &self.id {
            write!(f, ": record {id}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Default)]
pub struct IngestReport {
    pub accepted: Vec<Document>,
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest accepted document body, in bytes (default 4 MiB).
    pub max_body_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The JSONL record as written by users: known fields, `filename` as an alias of `path`, and
/// everything else kept as metadata. `id` may be a string or an integer.
#[derive(Deserialize)]
struct RawRecord {
    id: Option<serde_json::Value>,
    title: Option<String>,
    body: Option<String>,
    author: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    modified: Option<serde_json::Value>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

struct Validator {
    limits: IngestLimits,
    seen: HashMap<String, String>,
    report: IngestReport,
}

impl Validator {
    fn new(limits: IngestLimits) -> Self {
        Validator {
            limits,
            seen: HashMap::new(),
            report: IngestReport::default(),
        }
    }

    fn reject(
        &mut self,
        location: &str,
        id: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.report.rejected.push(Rejection {
            location: location.to_string(),
            id: id.map(String::from),
            field: field.map(String::from),
            message: message.into(),
        });
    }

    fn accept(&mut self, location: &str, doc: Document) {
        if doc.id.trim().is_empty() {
            return self.reject(location, None, Some("id"), "empty");
        }
        if doc.body.len() > self.limits.max_body_bytes {
            return self.reject(
                location,
                Some(&doc.id),
                Some("body"),
                format!(
                    "{} bytes, over the limit of {} bytes",
                    doc.body.len(),
                    self.limits.max_body_bytes
                ),
            );
        }
        if doc.body.trim().is_empty() {
            return self.reject(location, Some(&doc.id), Some("body"), "empty");
        }
        if let Some(first) = self.seen.get(&doc.id) {
            let message = format!("duplicate id, first seen at {first}; the first record is kept");
            return self.reject(location, Some(&doc.id.clone()), Some("id"), message);
        }
        self.seen.insert(doc.id.clone(), location.to_string());
        self.report.accepted.push(doc);
    }
}

/// Reads a JSONL corpus: `{"id", "title"?, "body", "author"?, "path"|"filename"?, "modified"?, ...}`.
pub fn ingest_jsonl(path: &Path, limits: IngestLimits) -> Result<IngestReport> {
    let file = std::fs::File::open(path).map_err(|source| CorpusError::Io {
        path: path.into(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut reader = BufReader::new(file);
    let mut v = Validator::new(limits);
    let mut buf = vec![];
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CorpusError::Io {
                path: path.into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        let loc = format!("{name}:{line}");
        let Ok(text) = std::str::from_utf8(&buf) else {
            v.reject(&loc, None, None, "not valid UTF-8");
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let raw: RawRecord = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                v.reject(
                    &loc,
                    None,
                    None,
                    format!(
                        "malformed JSON: {}",
                        e.to_string().replace(" at line 1 column", " at column")
                    ),
                );
                continue;
            }
        };
        let id = match raw.id {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => {
                v.reject(
                    &loc,
                    None,
                    Some("id"),
                    format!("must be a string or an integer, got {other}"),
                );
                continue;
            }
            None => {
                v.reject(&loc, None, Some("id"), "missing");
                continue;
            }
        };
        let modified = raw.modified.map(|m| match m {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        v.accept(
            &loc,
            Document {
                id,
                title: raw.title,
                body: raw.body.unwrap_or_default(),
                author: raw.author,
                path: raw.path.or(raw.filename),
                modified,
                metadata: raw.rest,
            },
        );
    }
    Ok(v.report)
}

/// Reads a corpus from a folder ([`ingest_dir`]) or a JSONL file ([`ingest_jsonl`]).
pub fn ingest_path(path: &Path, limits: IngestLimits) -> Result<IngestReport> {
    if path.is_dir() {
        ingest_dir(path, limits)
    } else {
        ingest_jsonl(path, limits)
    }
}

/// Reads every `.txt`, `.md` and `.markdown` file under `dir` (recursively, in path order).
/// The id and path are the path relative to `dir`; the title is the first Markdown heading,
/// else the file name; `modified` is the file's modification time in Unix seconds.
pub fn ingest_dir(dir: &Path, limits: IngestLimits) -> Result<IngestReport> {
    let mut files = vec![];
    collect_files(dir, &mut files)?;
    files.sort();
    let mut v = Validator::new(limits);
    for f in files {
        let rel = f
            .strip_prefix(dir)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&f).map_err(|source| CorpusError::Io {
            path: f.clone(),
            source,
        })?;
        let Ok(text) = String::from_utf8(bytes) else {
            v.reject(&rel, Some(&rel), Some("body"), "not valid UTF-8");
            continue;
        };
        let title = text
            .lines()
            .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string()))
            .or_else(|| f.file_stem().map(|s| s.to_string_lossy().into_owned()));
        let modified = std::fs::metadata(&f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs().to_string());
        v.accept(
            &rel,
            Document {
                id: rel.clone(),
                title,
                body: text,
                author: None,
                path: Some(rel.clone()),
                modified,
                metadata: BTreeMap::new(),
            },
        );
    }
    Ok(v.report)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| CorpusError::Io {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| CorpusError::Io {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("txt" | "md" | "markdown")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_bad_record_is_named_and_good_ones_kept() {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        let big = "x".repeat(10 * 1024 * 1024);
        let lines: Vec<Vec<u8>> = vec![
            br#"{"id": "a", "title": "Expense policy", "body": "Meals up to 50 EUR.", "author": "Finance", "filename": "expenses.md", "team": "fin"}"#.to_vec(),
            br#"{"id": "b", "body": "broken"#.to_vec(),
            b"{\"id\": \"c\", \"body\": \"caf\xe9\"}".to_vec(),
            br#"{"title": "no id", "body": "text"}"#.to_vec(),
            format!(r#"{{"id": "big", "body": "{big}"}}"#).into_bytes(),
            br#"{"id": "a", "body": "second a"}"#.to_vec(),
            br#"{"id": "empty", "title": "t", "body": "  "}"#.to_vec(),
            br#"{"id": 42, "body": "numeric id", "modified": 1700000000}"#.to_vec(),
        ];
        for l in &lines {
            f.write_all(l).unwrap();
            f.write_all(b"\n").unwrap();
        }
        let r = ingest_jsonl(f.path(), IngestLimits::default()).unwrap();
        let ids: Vec<&str> = r.accepted.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "42"]);
        let a = &r.accepted[0];
        assert_eq!(a.path.as_deref(), Some("expenses.md"));
        assert_eq!(
            a.body, "Meals up to 50 EUR.",
            "the duplicate did not overwrite the first record"
        );
        assert_eq!(a.metadata["team"], "fin");
        assert_eq!(r.accepted[1].modified.as_deref(), Some("1700000000"));
        let msgs: Vec<String> = r.rejected.iter().map(|x| x.to_string()).collect();
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        let expect = [
            format!("{name}:2: malformed JSON: EOF while parsing a string at column 27"),
            format!("{name}:3: not valid UTF-8"),
            format!("{name}:4: field `id`: missing"),
            format!("{name}:5: record big: field `body`: 10485760 bytes, over the limit of 4194304 bytes"),
            format!("{name}:6: record a: field `id`: duplicate id, first seen at {name}:1; the first record is kept"),
            format!("{name}:7: record empty: field `body`: empty"),
        ];
        assert_eq!(msgs, expect);
    }

    #[test]
    fn folders_of_text_and_markdown_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("hr")).unwrap();
        std::fs::write(
            dir.path().join("hr/leave.md"),
            "# Parental leave\n\n16 weeks paid.",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "VPN gateway list").unwrap();
        std::fs::write(dir.path().join("image.png"), [0u8, 1, 2]).unwrap();
        std::fs::write(dir.path().join("bad.txt"), [0xffu8, 0xfe]).unwrap();
        let r = ingest_dir(dir.path(), IngestLimits::default()).unwrap();
        let ids: Vec<&str> = r.accepted.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, vec!["hr/leave.md", "notes.txt"]);
        assert_eq!(r.accepted[0].title.as_deref(), Some("Parental leave"));
        assert_eq!(r.accepted[1].title.as_deref(), Some("notes"));
        assert!(r.accepted[0].modified.is_some());
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(
            r.rejected[0].to_string(),
            "bad.txt: record bad.txt: field `body`: not valid UTF-8"
        );
    }

    #[test]
    fn content_hash_changes_with_content_only() {
        let d = Document {
            id: "a".into(),
            title: None,
            body: "x".into(),
            author: None,
            path: None,
            modified: None,
            metadata: BTreeMap::new(),
        };
        let mut e = d.clone();
        e.modified = Some("1".into());
        assert_eq!(d.content_hash(), e.content_hash());
        e.body = "y".into();
        assert_ne!(d.content_hash(), e.content_hash());
    }
}
