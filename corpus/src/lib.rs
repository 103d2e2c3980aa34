//! The corpus: ingestion of JSONL files and folders of text with per-record validation, and the
//! tantivy BM25 index over title, body, author and path that retrieves hard negatives.

pub mod bm25;
pub mod ingest;

pub use bm25::{Bm25Index, Hit, IndexedText};
pub use ingest::{
    ingest_dir, ingest_jsonl, ingest_path, Document, IngestLimits, IngestReport, Rejection,
};

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index archive: {0}")]
    Archive(String),
}

pub type Result<T> = std::result::Result<T, CorpusError>;
