//! The labelfleet coordinator.
//!
//! - [`scheduler`]: jobs, task leases with deadlines, bounded retries, first-commit-wins;
//! - [`jobs`]: corpus upload validation and sharding, and the split of a job into tasks;
//! - [`planner`]: a job's tasks cut shard by shard over its corpus, never held whole;
//! - [`corpus_job`]: the whole method as one job, driven by the leader through child jobs;
//! - [`search_job`]: BM25 retrieval over a corpus, shard by shard on the workers;
//! - [`fleet`]: the live workers, and each one's share of a job's API rate limits;
//! - [`forward`]: a standby's client calls, checked and forwarded to the leader;
//! - [`recovery`]: the job record, and how a new leader reads state back (paged, lazy);
//! - [`service`]: the `JobService` and `TaskService` gRPC servers;
//! - [`server`]: one replica, from election to fail-stop.

pub mod corpus_job;
pub mod error;
pub mod fleet;
pub mod forward;
pub mod jobs;
pub mod lease_token;
pub mod planner;
pub mod recovery;
pub mod scheduler;
pub mod search_job;
pub mod server;
pub mod service;

pub use error::{CoordinatorError, Result};
