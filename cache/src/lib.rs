//! Content-keyed result cache: a re-run reuses every result whose inputs did not change
//! (document text, prompt version, model fingerprint, sampling parameters, request body), and
//! redoes only what a change invalidates. One append-only JSONL file per kind of result, so a
//! run cut short keeps everything it finished.

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cache entry does not serialize: {source}")]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Content key of raw bytes (SHA-256, first 128 bits, hex).
pub fn bytes_key(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

/// SHA-256 (first 128 bits, hex) over the parts, each followed by a separator byte.
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Identifies a model folder's weights without hashing gigabytes: its config, and the size and
/// modification time of each weight file.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let config = dir.join("config.json");
    let mut parts = vec![std::fs::read_to_string(&config).map_err(io(&config))?];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for f in files {
        let m = std::fs::metadata(&f).map_err(io(&f))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        parts.push(format!(
            "{}:{}:{:?}",
            f.file_name().unwrap_or_default().to_string_lossy(),
            m.len(),
            mtime
        ));
    }
    Ok(key(&parts.iter().map(String::as_str).collect::<Vec<_>>()))
}

/// `key -> value` entries persisted as JSONL lines `{"key": .., "value": ..}`.
pub struct Cache<V> {
    path: PathBuf,
    entries: HashMap<String, V>,
    file: std::fs::File,
}

#[derive(serde::Deserialize)]
struct Entry<V> {
    key: String,
    value: V,
}

impl<V: Serialize + DeserializeOwned + Clone> Cache<V> {
    /// Opens (or creates) the cache at `path`. A torn last line from an interrupted run is
    /// skipped, not an error.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut entries = HashMap::new();
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            for line in text.lines() {
                if let Ok(e) = serde_json::from_str::<Entry<V>>(line) {
                    entries.insert(e.key, e.value);
                }
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        // after a torn last line, start the next entry on a line of its own
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && std::fs::read(path).ok().and_then(|b| b.last().copied()) != Some(b'\n') {
            writeln!(file).map_err(io(path))?;
        }
        Ok(Cache {
            path: path.to_path_buf(),
            entries,
            file,
        })
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: String, value: V) -> Result<()> {
        let value_json = serde_json::to_value(&value).map_err(|source| CacheError::Serialize {
            path: self.path.clone(),
            source,
        })?;
        let line = serde_json::json!({"key": key, "value": value_json});
        writeln!(self.file, "{line}").map_err(io(&self.path))?;
        self.entries.insert(key, value);
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        {
            let mut c: Cache<Vec<f32>> = Cache::open(&path).unwrap();
            c.insert(key(&["a"]), vec![0.5, 0.5]).unwrap();
            c.insert(key(&["b"]), vec![1.0]).unwrap();
            c.flush().unwrap();
        }
        // an interrupted write leaves half a line behind
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"key\": \"x\", \"val")
            .unwrap();
        let mut c: Cache<Vec<f32>> = Cache::open(&path).unwrap();
        c.insert(key(&["c"]), vec![2.0]).unwrap();
        c.flush().unwrap();
        let c: Cache<Vec<f32>> = Cache::open(&path).unwrap();
        assert_eq!(
            c.get(&key(&["c"])),
            Some(&vec![2.0]),
            "an entry after a torn line is intact"
        );
        assert_eq!(c.get(&key(&["a"])), Some(&vec![0.5, 0.5]));
        assert_eq!(c.get(&key(&["b"])), Some(&vec![1.0]));
        assert_eq!(c.get(&key(&["x"])), None);
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]), "parts are delimited");
    }
}
