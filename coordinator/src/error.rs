use labelfleet_cluster::ClusterError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The metadata store or the object store (including a fenced write that was refused).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// This replica does not lead (a standby, or its election lease was lost).
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// Data that was committed cannot be read back (a missing or corrupt object).
    #[error("{0}")]
    DataLoss(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid, but this cluster is not set up to run it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A worker reported on a lease it does not hold (wrong worker, attempt or lease token).
    #[error("{0}")]
    NotHolder(String),
    /// A limit of this coordinator (pairs per job, upload bytes, watches per client).
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

impl CoordinatorError {
    /// True when this replica must stop acting as leader.
    pub fn is_not_leader(&self) -> bool {
        matches!(
            self,
            CoordinatorError::NotLeader(_) | CoordinatorError::Cluster(ClusterError::NotLeader(_))
        )
    }
}

pub type Result<T> = std::result::Result<T, CoordinatorError>;

/// gRPC codes say what happened: UNAVAILABLE only for "not the leader" and faults a retry
/// can clear (etcd or the object store unreachable), so clients stop retrying real faults.
impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        use tonic::Status;
        let message = e.to_string();
        if e.is_not_leader() {
            return Status::unavailable(message);
        }
        match e {
            CoordinatorError::Invalid(m) => Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::FailedPrecondition(m) | CoordinatorError::NotHolder(m) => {
                Status::failed_precondition(m)
            }
            CoordinatorError::LimitExceeded(m) => Status::resource_exhausted(m),
            CoordinatorError::DataLoss(_) => Status::data_loss(message),
            CoordinatorError::Transport(_) => Status::unavailable(message),
            CoordinatorError::Cluster(c) => match c {
                ClusterError::Etcd(_) => Status::unavailable(message),
                ClusterError::Store(object_store::Error::NotFound { .. }) => {
                    Status::data_loss(message)
                }
                ClusterError::Store(object_store::Error::Generic { .. }) => {
                    Status::unavailable(message)
                }
                ClusterError::Decode { .. } => Status::data_loss(message),
                ClusterError::Invalid(m) => Status::invalid_argument(m),
                _ => Status::internal(message),
            },
            CoordinatorError::NotLeader(_) | CoordinatorError::Io(_) => Status::internal(message),
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
        assert_eq!(
            code(CoordinatorError::Invalid("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(CoordinatorError::NotLeader("k".into())),
            Code::Unavailable
        );
        let fenced = ClusterError::NotLeader("k".into());
        assert_eq!(code(CoordinatorError::Cluster(fenced)), Code::Unavailable);
        assert_eq!(code(CoordinatorError::NotFound("j".into())), Code::NotFound);
        assert_eq!(code(CoordinatorError::DataLoss("o".into())), Code::DataLoss);
        let io = std::io::Error::other("disk");
        assert_eq!(code(CoordinatorError::Io(io)), Code::Internal);
    }
}
