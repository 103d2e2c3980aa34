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
