//! Limits every server enforces, with defaults safe for a shared cluster. Each is a flag of
//! the role that serves it (see `labelfleet coordinator --help`).

/// The servers' limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message, either way (a task, a result batch, a submit chunk).
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// Bytes of documents one `UploadCorpus` may send.
    pub max_upload_bytes: u64,
    /// Pairs one labeling job may hold.
    pub max_pairs_per_job: u64,
    /// `WatchJob` streams open at once per client (token, certificate or address).
    pub max_watches_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A search task's hits (256 queries x 1000 hits) are the largest message: ~8 MiB.
            max_message_bytes: 32 << 20,
            max_concurrent_streams: 256,
            max_upload_bytes: 16 << 30,
            max_pairs_per_job: 100_000_000,
            max_watches_per_client: 16,
        }
    }
}
