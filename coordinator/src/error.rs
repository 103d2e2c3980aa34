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
    /// Data that was committed cannot be read back (a missing or corrupt object).
    #[error("{0}")]
    DataLoss(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
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

/// gRPC codes say what happened: UNAVAILABLE only for "not the leader" and faults a retry
/// can clear (etcd or the object store unreachable), so clients stop retrying real faults.
impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        use tonic::Status;
        let message = e.to_string();
        match e {
            CoordinatorError::Invalid(m) => Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::NotLeader(m) => Status::unavailable(format!("not the leader ({m})")),
            CoordinatorError::Etcd(_) | CoordinatorError::Transport(_) => {
                Status::unavailable(message)
            }
            CoordinatorError::Store(object_store::Error::NotFound { .. }) => {
                Status::data_loss(message)
            }
            CoordinatorError::Store(object_store::Error::Generic { .. }) => {
                Status::unavailable(message)
            }
            CoordinatorError::Store(_) | CoordinatorError::Io(_) => Status::internal(message),
            CoordinatorError::Decode { .. } | CoordinatorError::DataLoss(_) => {
                Status::data_loss(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_say_what_happened() {
        let code = |e: CoordinatorError| tonic::Status::from(e).code();
        assert_eq!(code(CoordinatorError::Invalid("x".into())), Code::InvalidArgument);
        assert_eq!(code(CoordinatorError::NotLeader("k".into())), Code::Unavailable);
        assert_eq!(code(CoordinatorError::NotFound("j".into())), Code::NotFound);
        assert_eq!(code(CoordinatorError::DataLoss("o".into())), Code::DataLoss);
        let io = std::io::Error::other("disk");
        assert_eq!(code(CoordinatorError::Io(io)), Code::Internal);
    }
}
