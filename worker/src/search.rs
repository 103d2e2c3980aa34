//! BM25 search tasks: the top hits of a batch of queries on one corpus shard.
//!
//! A shard's tantivy index is built once for the whole cluster: the first worker that needs it
//! reads the shard's documents from the object store, indexes them and creates the index
//! archive there (create-once, so two workers racing on a new shard both end up searching the
//! first archive written). Every other search of the shard downloads the archive and opens it
//! in memory; a worker keeps the few indexes it used last.

use crate::engine::Outcome;
use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::layout::{bm25_index_key, corpus_shard_key};
use labelfleet_corpus::{Bm25Index, IndexedText};
use labelfleet_proto::v1::{CorpusChunk, QueryHits, SearchHit, Task};
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Shard indexes a worker keeps open (a 5,000-document shard's index is a few MB).
const OPEN_INDEXES: usize = 8;

/// Why a search task could not run: the reason, and whether another attempt may succeed.
struct Failure {
    reason: String,
    retryable: bool,
}

impl Failure {
    fn transient(reason: String) -> Self {
        Failure {
            reason,
            retryable: true,
        }
    }
    fn bad_input(reason: String) -> Self {
        Failure {
            reason,
            retryable: false,
        }
    }
}

/// Runs search tasks against the cluster's object store.
pub struct Searcher {
    blobs: Blobs,
    /// The indexes used last, most recent at the back.
    open: Mutex<VecDeque<(String, Arc<Bm25Index>)>>,
}

impl Searcher {
    pub fn new(blobs: Blobs) -> Self {
        Searcher {
            blobs,
            open: Mutex::new(VecDeque::new()),
        }
    }

    /// Searches the task's shard for each of its queries.
    pub async fn run(&self, task: &Task) -> Outcome {
        let start = Instant::now();
        let index = match self.index(&task.corpus_id, task.shard as usize).await {
            Ok(index) => index,
            Err(f) => {
                return Outcome::Failed {
                    reason: f.reason,
                    retryable: f.retryable,
                }
            }
        };
        let task = task.clone();
        let searched = tokio::task::spawn_blocking(move || search_all(&index, &task)).await;
        match searched {
            Ok(Ok(hits)) => Outcome::Done {
                labels: Vec::new(),
                queries: Vec::new(),
                hits,
                seconds: start.elapsed().as_secs_f64(),
                api_usage: None,
            },
            Ok(Err(reason)) => Outcome::Failed {
                reason,
                retryable: false,
            },
            Err(e) => Outcome::Failed {
                reason: format!("search thread: {e}"),
                retryable: true,
            },
        }
    }

    /// The shard's index: kept open, in the store, or built from the shard and stored.
    async fn index(&self, corpus: &str, shard: usize) -> Result<Arc<Bm25Index>, Failure> {
        let key = bm25_index_key(corpus, shard);
        if let Some(index) = self.recent(&key) {
            return Ok(index);
        }
        let archive = match self.blobs.get(&key).await {
            Ok(Some(bytes)) => bytes.to_vec(),
            Ok(None) => self.build(corpus, shard, &key).await?,
            Err(e) => return Err(Failure::transient(format!("reading `{key}`: {e}"))),
        };
        let index = tokio::task::spawn_blocking(move || Bm25Index::from_archive(&archive))
            .await
            .map_err(|e| Failure::transient(format!("opening `{key}`: {e}")))?
            .map_err(|e| Failure::transient(format!("opening `{key}`: {e}")))?;
        let index = Arc::new(index);
        self.keep(key, index.clone());
        Ok(index)
    }

    /// Indexes the shard's documents and creates the archive object; returns the archive
    /// that is in the store afterwards (another worker's, if it created one first).
    async fn build(&self, corpus: &str, shard: usize, key: &str) -> Result<Vec<u8>, Failure> {
        let shard_key = corpus_shard_key(corpus, shard);
        let bytes = match self.blobs.get(&shard_key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(Failure::bad_input(format!(
                    "corpus `{corpus}` has no shard {shard} (no object `{shard_key}`)"
                )))
            }
            Err(e) => return Err(Failure::transient(format!("reading `{shard_key}`: {e}"))),
        };
        let chunk = CorpusChunk::decode(bytes)
            .map_err(|e| Failure::bad_input(format!("corpus shard `{shard_key}`: {e}")))?;
        let started = Instant::now();
        let archive = tokio::task::spawn_blocking(move || {
            Bm25Index::archive(chunk.documents.iter().map(|d| IndexedText {
                id: &d.id,
                title: &d.title,
                body: &d.body,
                author: &d.author,
                path: &d.path,
            }))
        })
        .await
        .map_err(|e| Failure::transient(format!("indexing `{shard_key}`: {e}")))?
        .map_err(|e| Failure::transient(format!("indexing `{shard_key}`: {e}")))?;
        tracing::info!(
            shard = %shard_key,
            bytes = archive.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built the shard's BM25 index"
        );
        match self.blobs.put_once(key, archive.clone()).await {
            Ok(labelfleet_cluster::blobs::Created::Written) => Ok(archive),
            Ok(labelfleet_cluster::blobs::Created::AlreadyExists) => {
                match self.blobs.get(key).await {
                    Ok(Some(theirs)) => Ok(theirs.to_vec()),
                    Ok(None) => Ok(archive),
                    Err(e) => Err(Failure::transient(format!("reading `{key}`: {e}"))),
                }
            }
            Err(e) => Err(Failure::transient(format!("writing `{key}`: {e}"))),
        }
    }

    fn recent(&self, key: &str) -> Option<Arc<Bm25Index>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let at = open.iter().position(|(k, _)| k == key)?;
        let entry = open.remove(at)?;
        let index = entry.1.clone();
        open.push_back(entry);
        Some(index)
    }

    fn keep(&self, key: String, index: Arc<Bm25Index>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(k, _)| *k != key);
        open.push_back((key, index));
        while open.len() > OPEN_INDEXES {
            open.pop_front();
        }
    }
}

fn search_all(index: &Bm25Index, task: &Task) -> Result<Vec<QueryHits>, String> {
    task.queries
        .iter()
        .map(|q| {
            let hits = index
                .search(&q.text, task.depth as usize)
                .map_err(|e| format!("query `{}`: {e}", q.query_id))?;
            Ok(QueryHits {
                query_id: q.query_id.clone(),
                shard: task.shard,
                hits: hits
                    .into_iter()
                    .map(|h| SearchHit {
                        doc_id: h.id,
                        score: h.score,
                    })
                    .collect(),
            })
        })
        .collect()
}
