//! Cluster plumbing shared by the coordinator, the workers and the trainer, so that no role
//! imports another:
//!
//! - [`meta`]: etcd (membership, election with a fencing token, records, progress marks) or an
//!   in-process store for embedded mode;
//! - [`blobs`]: the object store for bulk data (corpora, tasks, results, checkpoints);
//! - [`metrics`]: Prometheus text exposition;
//! - [`layout`]: where a corpus's shards and their BM25 indexes are in the object store;
//! - [`checkpoint`]: the checkpoint folder's digest and the chunked push to a worker;
//! - [`committee`]: a committee teacher's rules and how its judges' distributions are pooled;
//! - [`security`]: TLS, the role in each certificate and the servers' checks on callers;
//!   [`certs`] makes the certificates, [`tokens`] holds clients' bearer tokens;
//! - [`ids`] and [`limits`]: what an id may look like, and the servers' limits;
//! - [`ports`]: loopback ports for servers a parent process starts and dials.

pub mod blobs;
pub mod certs;
pub mod checkpoint;
pub mod committee;
pub mod error;
pub mod ids;
pub mod layout;
pub mod limits;
pub mod meta;
pub mod metrics;
pub mod ports;
pub mod security;
pub mod tokens;

pub use error::{ClusterError, Result};
pub use meta::open_meta;

/// Largest gRPC message accepted (a job spec with many pairs, a result batch).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
