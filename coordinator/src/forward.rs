//! A standby's `JobService`: every call is checked here (token and permission, as on the
//! leader), then forwarded to the elected leader, whose answer comes back unchanged. So every
//! replica can serve clients, and a Kubernetes Service may send them to any replica.
//!
//! The forwarded call carries the client's `authorization` header, and the standby's own
//! certificate when the cluster runs TLS (a coordinator certificate, which the leader trusts).
//! A client stream that breaks mid-way is not ended cleanly on the leader's side: the forwarded
//! call is cancelled, so a cut upload or submit never commits as if it were whole.

use labelfleet_cluster::meta::MetaStore;
use labelfleet_cluster::security::{Role, Transport};
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use std::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// How a standby reaches the leader.
pub struct Forwarder {
    meta: MetaStore,
    transport: Transport,
    /// This replica's advertised address: never forward to oneself.
    own: String,
    max_message_bytes: usize,
    /// The leader's address and a channel to it, reused while the leader stays the same.
    cached: Mutex<Option<(String, Channel)>>,
}

impl Forwarder {
    pub fn new(
        meta: MetaStore,
        transport: Transport,
        own: String,
        max_message_bytes: usize,
    ) -> Self {
        Forwarder {
            meta,
            transport,
            own,
            max_message_bytes,
            cached: Mutex::new(None),
        }
    }

    /// A client of the current leader. UNAVAILABLE while no leader is elected (or this replica
    /// is the one being elected), or when its address is unusable: the caller retries.
    pub async fn leader(&self) -> Result<JobServiceClient<Channel>, Status> {
        let address = self
            .meta
            .leader_address()
            .await
            .map_err(|e| Status::unavailable(format!("standby: cannot read the leader: {e}")))?
            .ok_or_else(|| Status::unavailable("standby: no leader is elected yet"))?;
        if address == self.own {
            return Err(Status::unavailable(
                "this coordinator is being elected leader; retry",
            ));
        }
        let channel = {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            cached
                .as_ref()
                .filter(|(a, _)| *a == address)
                .map(|(_, c)| c.clone())
        };
        let channel = match channel {
            Some(c) => c,
            None => {
                let endpoint = self
                    .transport
                    .endpoint(&address, Role::Coordinator)
                    .map_err(|e| Status::unavailable(format!("standby: leader {address}: {e}")))?;
                let c = endpoint.connect_lazy();
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((address, c.clone()));
                c
            }
        };
        Ok(JobServiceClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// `req` as a request to the leader: its message, with the caller's `authorization` header.
pub fn onward<M>(req: Request<M>) -> Request<M> {
    let auth = req.metadata().get("authorization").cloned();
    with_auth(auth, req.into_inner())
}

/// The caller's `authorization` header, to send on with a forwarded stream.
pub fn auth_of<T>(
    req: &Request<T>,
) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    req.metadata().get("authorization").cloned()
}

/// A request carrying `auth` as its `authorization` header.
pub fn with_auth<M>(
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    message: M,
) -> Request<M> {
    let mut req = Request::new(message);
    if let Some(a) = auth {
        req.metadata_mut().insert("authorization", a);
    }
    req
}

/// Forwards a client stream: each message read from the caller is sent on to the leader. If
/// the caller's stream breaks, the forwarded call is cancelled before its stream could end, so
/// the leader sees a broken stream too, never a clean end of a partial one.
pub async fn forward_client_stream<T, R, F, Fut>(
    mut incoming: Streaming<T>,
    call: F,
) -> Result<Response<R>, Status>
where
    T: Send + 'static,
    F: FnOnce(ReceiverStream<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, Status>>,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(4);
    // boxed, so that dropping it below really drops (cancels) the call
    let mut call = Box::pin(call(ReceiverStream::new(rx)));
    // The pump ends Ok when the caller's stream ends (dropping the sender: a clean end), or
    // Err with the sender still alive when it breaks.
    let pump = async move {
        loop {
            match incoming.message().await {
                Ok(Some(m)) => {
                    if tx.send(m).await.is_err() {
                        return Ok(()); // the leader stopped reading: its answer says why
                    }
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err((status, tx)),
            }
        }
    };
    let pumped = tokio::select! {
        answer = &mut call => return answer,
        pumped = pump => pumped,
    };
    match pumped {
        Ok(()) => call.await,
        Err((status, sender)) => {
            // cancel first, then let the stream go: the leader never sees it end
            drop(call);
            drop(sender);
            Err(status)
        }
    }
}
