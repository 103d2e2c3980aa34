//! Lease tokens: a lease is bound to the worker it was granted to. The token is an HMAC of
//! (task, attempt, worker) under a key every leader shares (kept in etcd), so a completion,
//! heartbeat or failure report is accepted only from the worker holding that attempt, and a
//! new leader still accepts the results of leases its predecessor granted.

use crate::error::{CoordinatorError, Result};
use hmac::{Hmac, Mac};
use labelfleet_cluster::meta::{keys, MetaStore};
use sha2::Sha256;

/// Signs and checks lease tokens.
#[derive(Clone)]
pub struct LeaseSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LeaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseSigner(..)")
    }
}

impl LeaseSigner {
    pub fn new(key: Vec<u8>) -> LeaseSigner {
        LeaseSigner { key }
    }

    /// The cluster's signing key: read from the metadata store, or made there by the first
    /// leader that needs it.
    pub async fn load(meta: &MetaStore) -> Result<LeaseSigner> {
        let key = keys::lease_signing_key(meta.prefix());
        let fresh = rand::random::<[u8; 32]>().to_vec();
        let existing = meta.put_if_absent(&key, fresh.clone()).await?;
        let key = existing.unwrap_or(fresh);
        if key.len() < 16 {
            return Err(CoordinatorError::DataLoss(
                "the lease signing key in the metadata store is too short".into(),
            ));
        }
        Ok(LeaseSigner { key })
    }

    fn mac(&self, task_id: &str, attempt: u32, worker: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        for part in [
            task_id.as_bytes(),
            &attempt.to_be_bytes(),
            worker.as_bytes(),
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The token of `worker`'s lease on `task_id` attempt `attempt`.
    pub fn token(&self, task_id: &str, attempt: u32, worker: &str) -> String {
        hex::encode(&self.mac(task_id, attempt, worker).finalize().into_bytes()[..16])
    }

    /// Whether `token` is that lease's (compared in constant time).
    pub fn verify(&self, task_id: &str, attempt: u32, worker: &str, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token) else {
            return false;
        };
        self.mac(task_id, attempt, worker)
            .verify_truncated_left(&bytes)
            .is_ok()
            && bytes.len() == 16
    }

    /// FAILED_PRECONDITION unless `token` is `worker`'s lease on (`task_id`, `attempt`).
    pub fn check(
        &self,
        call: &str,
        task_id: &str,
        attempt: u32,
        worker: &str,
        token: &str,
    ) -> Result<()> {
        if self.verify(task_id, attempt, worker, token) {
            return Ok(());
        }
        Err(CoordinatorError::NotHolder(format!(
            "{call}: task `{task_id}` attempt {attempt} is not leased to worker `{worker}` with this lease token; results are not accepted"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_its_task_attempt_and_worker() {
        let s = LeaseSigner::new(vec![7; 32]);
        let t = s.token("job-1-t00000003", 2, "w-a");
        assert!(s.verify("job-1-t00000003", 2, "w-a", &t));
        assert!(!s.verify("job-1-t00000003", 2, "w-b", &t));
        assert!(!s.verify("job-1-t00000003", 3, "w-a", &t));
        assert!(!s.verify("job-1-t00000004", 2, "w-a", &t));
        assert!(!s.verify("job-1-t00000003", 2, "w-a", ""));
        assert!(!s.verify("job-1-t00000003", 2, "w-a", &t[..8]));
        let other = LeaseSigner::new(vec![8; 32]);
        assert!(!other.verify("job-1-t00000003", 2, "w-a", &t));
        let err = s
            .check("CompleteTask", "job-1-t00000003", 2, "w-b", &t)
            .unwrap_err();
        assert!(
            err.to_string().contains("not leased to worker `w-b`"),
            "{err}"
        );
    }
}
