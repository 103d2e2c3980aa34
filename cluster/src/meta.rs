//! Cluster metadata: membership, leader election with a fencing token, job records and
//! per-task progress marks. etcd in a cluster; an in-process map in embedded mode and tests.
//! Values are small; bulk data goes to the object store (`blobs`).

use crate::error::{ClusterError, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keys per page of a prefix listing: etcd's client caps a response at 4 MiB.
pub const LIST_PAGE: i64 = 1_000;

/// Key layout under one prefix (default `/labelfleet`).
pub mod keys {
    pub const ELECTION: &str = "leader";
    pub fn job(prefix: &str, job: &str) -> String {
        format!("{prefix}/jobs/{job}/record")
    }
    pub fn jobs(prefix: &str) -> String {
        format!("{prefix}/jobs/")
    }
    /// A task that failed for good. Kept apart from the records, so a new leader reads the
    /// failures of running jobs only.
    pub fn failed(prefix: &str, job: &str, task: &str) -> String {
        format!("{prefix}/failed/{job}/{task}")
    }
    pub fn failed_of_job(prefix: &str, job: &str) -> String {
        format!("{prefix}/failed/{job}/")
    }
    pub fn workers(prefix: &str) -> String {
        format!("{prefix}/workers/")
    }
    pub fn worker(prefix: &str, id: &str) -> String {
        format!("{prefix}/workers/{id}")
    }
    pub fn checkpoint(prefix: &str, id: &str) -> String {
        format!("{prefix}/checkpoints/{id}")
    }
    pub fn idempotency(prefix: &str, key: &str) -> String {
        format!("{prefix}/idempotency/{key}")
    }
    /// The key leaders sign lease tokens with (made once, shared by every leader).
    pub fn lease_signing_key(prefix: &str) -> String {
        format!("{prefix}/secrets/lease-signing-key")
    }
}

/// Proof of leadership: the election key and its creation revision. Every write the leader
/// makes is a transaction that first checks the key still has that revision, so a deposed
/// leader (paused, partitioned) cannot overwrite its successor's state.
#[derive(Debug, Clone)]
pub struct Fence {
    pub key: Vec<u8>,
    pub token: u64,
}

impl Fence {
    /// The transaction guard of a fenced write: the election key still has its revision.
    fn holds(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.token as i64)
    }
}

/// Until when an etcd lease is surely still held: the time a renewal was *sent* plus the TTL
/// etcd granted, less a margin. etcd can only expire the lease later than that, so a leader
/// that stops serving at this instant stops before any successor can be elected (a process
/// frozen by SIGSTOP finds its clock run out the moment it resumes).
#[derive(Debug, Clone)]
pub struct LeaseClock {
    until: Arc<Mutex<Option<Instant>>>,
}

impl LeaseClock {
    fn until(until: Instant) -> LeaseClock {
        LeaseClock {
            until: Arc::new(Mutex::new(Some(until))),
        }
    }

    /// A lease that never runs out (the embedded store's single coordinator).
    pub fn forever() -> LeaseClock {
        LeaseClock {
            until: Arc::new(Mutex::new(None)),
        }
    }

    fn extend(&self, until: Instant) {
        let mut u = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = *u {
            *u = Some(old.max(until));
        }
    }

    fn expire(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the lease is surely still held now.
    pub fn held(&self) -> bool {
        match *self.until.lock().unwrap_or_else(|p| p.into_inner()) {
            None => true,
            Some(u) => Instant::now() < u,
        }
    }
}

/// How long before the lease could expire a holder stops trusting it: renewals are sent every
/// quarter TTL, so a healthy holder is always at least a quarter TTL inside its clock.
fn lease_margin(ttl: Duration) -> Duration {
    ttl / 4
}

/// A won election. `lost` turns true when the lease behind it could not be renewed in time;
/// `clock` says until when it is surely held.
#[derive(Clone)]
pub struct Leadership {
    pub fence: Fence,
    pub lost: watch::Receiver<bool>,
    pub clock: LeaseClock,
    /// The etcd lease behind the election (none in embedded mode): revoked to resign.
    pub lease_id: Option<i64>,
}

/// How a role authenticates to etcd: TLS (the CA, and a client certificate when etcd runs
/// with `--client-cert-auth`) and/or a user and password (etcd's own authentication).
#[derive(Debug, Clone, Default)]
pub struct EtcdSecurity {
    pub tls: crate::security::TlsPaths,
    pub user: Option<(String, String)>,
}

impl EtcdSecurity {
    fn apply(&self, mut opts: ConnectOptions) -> Result<ConnectOptions> {
        if let Some(ca) = &self.tls.ca {
            let read = |what: &str, p: &std::path::Path| {
                std::fs::read(p).map_err(|e| {
                    ClusterError::Invalid(format!("etcd {what} `{}`: {e}", p.display()))
                })
            };
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read("CA", ca)?));
            match (&self.tls.cert, &self.tls.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read("certificate", cert)?,
                        read("key", key)?,
                    ))
                }
                (None, None) => {}
                _ => {
                    return Err(ClusterError::Invalid(
                        "etcd TLS: --etcd-cert and --etcd-key go together".into(),
                    ))
                }
            }
            opts = opts.with_tls(tls);
        }
        if let Some((user, password)) = &self.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        Ok(opts)
    }

    /// The endpoints with the scheme TLS needs.
    fn endpoints(&self, endpoints: &[String]) -> Vec<String> {
        let tls = self.tls.ca.is_some();
        endpoints
            .iter()
            .map(|e| {
                let host = e
                    .strip_prefix("http://")
                    .or_else(|| e.strip_prefix("https://"))
                    .unwrap_or(e);
                match tls {
                    true => format!("https://{host}"),
                    false => format!("http://{host}"),
                }
            })
            .collect()
    }
}

/// How long a role waits at startup for etcd to answer.
pub const ETCD_STARTUP_WAIT: Duration = Duration::from_secs(60);

/// Connects to etcd with timeouts suited to a control plane.
pub async fn connect_etcd(endpoints: &[String], security: &EtcdSecurity) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
    let opts = security.apply(opts)?;
    Ok(Client::connect(security.endpoints(endpoints), Some(opts)).await?)
}

/// Keeps an etcd lease alive, re-opening the keep-alive stream after errors (an etcd restart
/// breaks it). Sets `lost` when the lease is gone or was not renewed within its TTL.
pub fn spawn_lease_keeper(client: Client, lease_id: i64, ttl: Duration) -> watch::Receiver<bool> {
    let clock = LeaseClock::until(Instant::now() + ttl - lease_margin(ttl));
    spawn_lease_keeper_with_clock(client, lease_id, ttl, clock)
}

/// [`spawn_lease_keeper`], moving `clock` forward with every renewal.
pub fn spawn_lease_keeper_with_clock(
    client: Client,
    lease_id: i64,
    ttl: Duration,
    clock: LeaseClock,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(ttl / 4).await;
            // Nobody holds the lease any more (the holder resigned or ended): stop quietly.
            if tx.is_closed() {
                return;
            }
            let mut c = client.clone();
            let sent = Instant::now();
            let renewed = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease_id).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(stream.message().await?.map(|m| m.ttl()))
            }
            .await;
            match renewed {
                Ok(Some(ttl_left)) if ttl_left > 0 => {
                    last_ok = Instant::now();
                    let granted = Duration::from_secs(ttl_left as u64);
                    clock.extend(sent + granted.saturating_sub(lease_margin(ttl)));
                }
                Ok(_) => {
                    tracing::error!(lease_id, "etcd lease expired");
                    clock.expire();
                    let _ = tx.send(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease_id, error = %e, "etcd lease renewal failed; retrying");
                    if last_ok.elapsed() >= ttl || !clock.held() {
                        clock.expire();
                        let _ = tx.send(true);
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The metadata store.
// One per process, cloned rarely: the size of the etcd client does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum MetaStore {
    Etcd { client: Client, prefix: String },
    Memory(Arc<Mutex<BTreeMap<String, Vec<u8>>>>),
}

impl MetaStore {
    pub fn memory() -> Self {
        MetaStore::Memory(Arc::default())
    }

    pub fn prefix(&self) -> &str {
        match self {
            MetaStore::Etcd { prefix, .. } => prefix,
            MetaStore::Memory(_) => "/labelfleet",
        }
    }

    /// Blocks until this replica leads. `value` is the address it serves on.
    pub async fn campaign(&self, value: &str, ttl: Duration) -> Result<Leadership> {
        match self {
            MetaStore::Memory(_) => {
                let (tx, lost) = watch::channel(false);
                // Embedded mode has one coordinator, which leads for the life of the process.
                std::mem::forget(tx);
                Ok(Leadership {
                    fence: Fence {
                        key: b"embedded".to_vec(),
                        token: 1,
                    },
                    lost,
                    clock: LeaseClock::forever(),
                    lease_id: None,
                })
            }
            MetaStore::Etcd { client, prefix } => {
                let mut c = client.clone();
                let asked = Instant::now();
                let lease = c.lease_grant(ttl.as_secs().max(1) as i64, None).await?;
                let clock = LeaseClock::until(asked + ttl - lease_margin(ttl));
                let lost =
                    spawn_lease_keeper_with_clock(client.clone(), lease.id(), ttl, clock.clone());
                let name = format!("{prefix}/{}", keys::ELECTION);
                // Campaign blocks until this replica leads, longer than the client's request
                // timeout. The election key is derived from the lease, so asking again after a
                // timeout (or an etcd restart) re-joins the same place in line.
                let won = loop {
                    match c.campaign(name.clone(), value, lease.id()).await {
                        Ok(won) => break won,
                        Err(e) => {
                            if *lost.borrow() {
                                return Err(e.into());
                            }
                            tracing::debug!(error = %e, "still campaigning");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                let key = won
                    .leader()
                    .ok_or_else(|| ClusterError::NotLeader("campaign returned no key".into()))?;
                Ok(Leadership {
                    fence: Fence {
                        key: key.key().to_vec(),
                        token: key.rev() as u64,
                    },
                    lost,
                    clock,
                    lease_id: Some(lease.id()),
                })
            }
        }
    }

    /// Gives up a won election at once (a clean shutdown): the lease is revoked, so its key
    /// goes and a standby is elected without waiting for the TTL.
    pub async fn resign(&self, leadership: &Leadership) -> Result<()> {
        leadership.clock.expire();
        match (self, leadership.lease_id) {
            (MetaStore::Etcd { client, .. }, Some(id)) => {
                client.clone().lease_revoke(id).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The address the current leader published, if any.
    pub async fn leader_address(&self) -> Result<Option<String>> {
        match self {
            MetaStore::Memory(_) => Ok(None),
            MetaStore::Etcd { client, prefix } => {
                let mut c = client.clone();
                match c.leader(format!("{prefix}/{}", keys::ELECTION)).await {
                    Ok(resp) => Ok(resp
                        .kv()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
                    Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => {
                        Ok(None)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Writes `key` only while `fence` holds.
    pub async fn put_fenced(&self, fence: &Fence, key: &str, value: Vec<u8>) -> Result<()> {
        match self {
            MetaStore::Memory(map) => {
                lock(map).insert(key.to_string(), value);
                Ok(())
            }
            MetaStore::Etcd { client, .. } => {
                let txn = Txn::new()
                    .when(vec![fence.holds()])
                    .and_then(vec![TxnOp::put(key, value, None)]);
                let resp = client.clone().txn(txn).await?;
                if resp.succeeded() {
                    Ok(())
                } else {
                    Err(ClusterError::NotLeader(key.to_string()))
                }
            }
        }
    }

    /// Writes `key` (unfenced: for records that are not the leader's, like the checkpoint
    /// registry the trainer keeps).
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        match self {
            MetaStore::Memory(map) => {
                lock(map).insert(key.to_string(), value);
                Ok(())
            }
            MetaStore::Etcd { client, .. } => {
                client.clone().put(key, value, None).await?;
                Ok(())
            }
        }
    }

    /// Writes `key` unless it exists; returns the value already there when it does.
    pub async fn put_if_absent(&self, key: &str, value: Vec<u8>) -> Result<Option<Vec<u8>>> {
        match self {
            MetaStore::Memory(map) => {
                let mut m = lock(map);
                if let Some(v) = m.get(key) {
                    return Ok(Some(v.clone()));
                }
                m.insert(key.to_string(), value);
                Ok(None)
            }
            MetaStore::Etcd { client, .. } => {
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then(vec![TxnOp::put(key, value, None)])
                    .or_else(vec![TxnOp::get(key, None)]);
                let resp = client.clone().txn(txn).await?;
                if resp.succeeded() {
                    return Ok(None);
                }
                for op in resp.op_responses() {
                    if let etcd_client::TxnOpResponse::Get(g) = op {
                        if let Some(kv) = g.kvs().first() {
                            return Ok(Some(kv.value().to_vec()));
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    /// Replaces `key` with `new` (deletes it when `new` is None) only while it holds
    /// `expected`; returns whether it did.
    pub async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Vec<u8>>,
    ) -> Result<bool> {
        match self {
            MetaStore::Memory(map) => {
                let mut m = lock(map);
                if m.get(key).map(Vec::as_slice) != Some(expected) {
                    return Ok(false);
                }
                match new {
                    Some(v) => m.insert(key.to_string(), v),
                    None => m.remove(key),
                };
                Ok(true)
            }
            MetaStore::Etcd { client, .. } => {
                let op = match new {
                    Some(v) => TxnOp::put(key, v, None),
                    None => TxnOp::delete(key, None),
                };
                let txn = Txn::new()
                    .when(vec![Compare::value(key, CompareOp::Equal, expected)])
                    .and_then(vec![op]);
                Ok(client.clone().txn(txn).await?.succeeded())
            }
        }
    }

    /// Writes `key` attached to an etcd lease (dropped with it). Memory: a plain write.
    pub async fn put_with_lease(&self, key: &str, value: Vec<u8>, lease_id: i64) -> Result<()> {
        match self {
            MetaStore::Memory(map) => {
                lock(map).insert(key.to_string(), value);
                Ok(())
            }
            MetaStore::Etcd { client, .. } => {
                client
                    .clone()
                    .put(key, value, Some(PutOptions::new().with_lease(lease_id)))
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            MetaStore::Memory(map) => Ok(lock(map).get(key).cloned()),
            MetaStore::Etcd { client, .. } => {
                let resp = client.clone().get(key, None).await?;
                Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
            }
        }
    }

    /// Every key under `prefix`, in key order, read in pages of [`LIST_PAGE`] keys so that no
    /// response nears the client's message limit however many keys there are.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            MetaStore::Memory(map) => Ok(lock(map)
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            MetaStore::Etcd { client, .. } => {
                let end = prefix_end(prefix.as_bytes());
                let mut out = Vec::new();
                let mut start = prefix.as_bytes().to_vec();
                loop {
                    let opts = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(LIST_PAGE);
                    let resp = client.clone().get(start.clone(), Some(opts)).await?;
                    for kv in resp.kvs() {
                        out.push((
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            kv.value().to_vec(),
                        ));
                    }
                    match resp.kvs().last() {
                        Some(last) if resp.more() => {
                            start = last.key().to_vec();
                            start.push(0);
                        }
                        _ => return Ok(out),
                    }
                }
            }
        }
    }

    /// Deletes `key` and every key under `prefix`, only while `fence` holds.
    pub async fn delete_fenced(&self, fence: &Fence, key: &str, prefix: &str) -> Result<()> {
        match self {
            MetaStore::Memory(map) => {
                let mut m = lock(map);
                m.remove(key);
                m.retain(|k, _| !k.starts_with(prefix));
                Ok(())
            }
            MetaStore::Etcd { client, .. } => {
                let txn = Txn::new().when(vec![fence.holds()]).and_then(vec![
                    TxnOp::delete(key, None),
                    TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
                ]);
                if client.clone().txn(txn).await?.succeeded() {
                    Ok(())
                } else {
                    Err(ClusterError::NotLeader(key.to_string()))
                }
            }
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end of a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects to the metadata store, retrying while etcd comes up. No endpoints means the
/// in-process store of embedded mode.
pub async fn open_meta(
    etcd: &[String],
    prefix: &str,
    security: &EtcdSecurity,
) -> Result<MetaStore> {
    if etcd.is_empty() {
        return Ok(MetaStore::memory());
    }
    let start = Instant::now();
    loop {
        match connect_etcd(etcd, security).await {
            Ok(client) => {
                return Ok(MetaStore::Etcd {
                    client,
                    prefix: prefix.trim_end_matches('/').to_string(),
                })
            }
            Err(e @ ClusterError::Invalid(_)) => return Err(e),
            Err(e) if start.elapsed() < ETCD_STARTUP_WAIT => {
                tracing::warn!(error = %e, "etcd not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replace_if_changes_the_key_only_while_it_holds_the_expected_value() {
        let meta = MetaStore::memory();
        assert!(!meta
            .replace_if("k", b"a", Some(b"b".to_vec()))
            .await
            .unwrap());
        assert_eq!(meta.get("k").await.unwrap(), None);
        meta.put("k", b"a".to_vec()).await.unwrap();
        assert!(!meta.replace_if("k", b"x", None).await.unwrap());
        assert_eq!(meta.get("k").await.unwrap(), Some(b"a".to_vec()));
        assert!(meta
            .replace_if("k", b"a", Some(b"b".to_vec()))
            .await
            .unwrap());
        assert_eq!(meta.get("k").await.unwrap(), Some(b"b".to_vec()));
        assert!(meta.replace_if("k", b"b", None).await.unwrap());
        assert_eq!(meta.get("k").await.unwrap(), None);
    }
}
