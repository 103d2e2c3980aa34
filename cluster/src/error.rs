use thiserror::Error;

/// Errors of the cluster plumbing: the metadata store, the object store, checkpoint transfer.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A fenced write found another leader's key: this replica must step down.
    #[error("lost leadership: a fenced write to `{0}` was refused")]
    NotLeader(String),
    #[error("decoding `{key}`: {message}")]
    Decode { key: String, message: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, ClusterError>;
