use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordinatorError {
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
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<labelfleet_cluster::ClusterError> for CoordinatorError {
    fn from(e: labelfleet_cluster::ClusterError) -> Self {
        use labelfleet_cluster::ClusterError as C;
        match e {
            C::Etcd(e) => CoordinatorError::Etcd(e),
            C::Store(e) => CoordinatorError::Store(e),
            C::NotLeader(k) => CoordinatorError::NotLeader(k),
            C::Decode { key, message } => CoordinatorError::Decode { key, message },
            C::Invalid(m) => CoordinatorError::Invalid(m),
            C::Io(e) => CoordinatorError::Io(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoordinatorError>;

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::Invalid(m) => tonic::Status::invalid_argument(m),
            CoordinatorError::NotLeader(m) => {
                tonic::Status::unavailable(format!("not the leader ({m})"))
            }
            other => tonic::Status::unavailable(other.to_string()),
        }
    }
}
