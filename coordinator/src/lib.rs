//! The labelfleet coordinator.
//!
//! - [`scheduler`]: jobs, task leases with deadlines, bounded retries, first-commit-wins;
//! - [`jobs`]: corpus upload validation and sharding, and the split of a job into tasks;
//! - [`meta`]: etcd (membership, election with a fencing token, records, progress marks) or an
//!   in-process store for embedded mode;
//! - [`blobs`]: the object store for bulk data (corpora, tasks, results, checkpoints);
//! - [`service`]: the `JobService` and `TaskService` gRPC servers;
//! - [`server`]: one replica, from election to fail-stop.

pub mod blobs;
pub mod error;
pub mod jobs;
pub mod meta;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod service;

pub use error::{CoordinatorError, Result};
