//! Where the roles find a corpus in the object store: its shards (the uploaded documents, one
//! `CorpusChunk` object each, written by the coordinator) and each shard's BM25 index (an
//! archive built by the first worker that searches the shard, then read by every other).

/// The object holding shard `shard` of `corpus`.
pub fn corpus_shard_key(corpus: &str, shard: usize) -> String {
    format!("{}shard-{shard:05}.pb", corpus_prefix(corpus))
}

/// The prefix under which a corpus's shards, and nothing else, are stored.
pub fn corpus_prefix(corpus: &str) -> String {
    format!("corpora/{corpus}/")
}

/// The object holding the BM25 index of shard `shard` of `corpus` (the format's version is in
/// the key, so an index written by another version is rebuilt, never misread).
pub fn bm25_index_key(corpus: &str, shard: usize) -> String {
    format!("indexes/{corpus}/bm25-v1/shard-{shard:05}.idx")
}
