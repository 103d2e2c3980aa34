//! Cluster plumbing shared by the coordinator, the workers and the trainer, so that no role
//! imports another:
//!
//! - [`meta`]: etcd (membership, election with a fencing token, records, progress marks) or an
//!   in-process store for embedded mode;
//! - [`blobs`]: the object store for bulk data (corpora, tasks, results, checkpoints);
//! - [`metrics`]: Prometheus text exposition;
//! - [`layout`]: where a corpus's shards and their BM25 indexes are in the object store;
//! - [`checkpoint`]: the checkpoint folder's digest and the chunked push to a worker.

pub mod blobs;
pub mod checkpoint;
pub mod error;
pub mod layout;
pub mod meta;
pub mod metrics;

pub use error::{ClusterError, Result};
pub use meta::open_meta;

/// Largest gRPC message accepted (a job spec with many pairs, a result batch).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
