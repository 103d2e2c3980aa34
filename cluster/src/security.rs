//! Transport security shared by every role: the TLS material a process loads, the role each
//! certificate carries, and the check a server makes on who is calling.
//!
//! Every role's certificate is signed by one cluster CA and names its role twice:
//! - a URI SAN `spiffe://labelfleet/<role>` (or `.../<role>/<name>` for a certificate bound to
//!   one worker id), which a server reads to decide what the caller may do;
//! - a DNS SAN `<role>.labelfleet.internal`, which a client verifies: a client that dials a
//!   worker's control port checks that a *worker* answers, whatever the pod's address.
//!
//! Plaintext is a [`Transport::Plaintext`]; servers built on it check nothing, and the roles
//! only choose it when told `--insecure` (or in the embedded, loopback-only cluster).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// The URI SAN prefix that carries a certificate's role.
pub const ROLE_URI_PREFIX: &str = "spiffe://labelfleet/";
/// The DNS SAN suffix a client verifies a server's role with.
pub const ROLE_DOMAIN_SUFFIX: &str = ".labelfleet.internal";

/// What a certificate lets its holder do in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs jobs; may call the trainer, and its own `JobService` as a corpus job's driver.
    Coordinator,
    /// Leases, heartbeats and completes tasks.
    Worker,
    /// Pushes checkpoints to workers.
    Trainer,
    /// A person operating the cluster: drains workers, and may use every `JobService` call.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Coordinator,
        Role::Worker,
        Role::Trainer,
        Role::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Trainer => "trainer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The name a client verifies when it dials a server of this role.
    pub fn domain(self) -> String {
        format!("{}{ROLE_DOMAIN_SUFFIX}", self.as_str())
    }

    /// The URI SAN of a certificate of this role (optionally bound to one name).
    pub fn uri(self, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{ROLE_URI_PREFIX}{}/{n}", self.as_str()),
            None => format!("{ROLE_URI_PREFIX}{}", self.as_str()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error)]
pub enum SecurityError {
    #[error("reading {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("generating certificates: {0}")]
    Generate(String),
    #[error("writing `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a process's TLS files are: the cluster CA, and (for a role) its certificate and key.
#[derive(Debug, Clone, Default)]
pub struct TlsPaths {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsPaths {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// The TLS material of one process, loaded once.
#[derive(Debug)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Option<Identity>,
}

/// How a process talks to its peers.
#[derive(Debug, Clone)]
pub enum Transport {
    /// No TLS: servers check no identity. Only with `--insecure`, or on loopback.
    Plaintext,
    Tls(Arc<TlsMaterial>),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl Transport {
    /// The transport a role runs with: TLS from `paths` (the CA, the certificate and the key are
    /// all required), or plaintext when `insecure` (with a warning). Neither is an error: a
    /// role never falls back to plaintext on its own.
    pub fn for_role(
        role: Role,
        paths: &TlsPaths,
        insecure: bool,
    ) -> Result<Transport, SecurityError> {
        if insecure {
            if !paths.is_empty() {
                return Err(SecurityError::Invalid(format!(
                    "{role}: --insecure and TLS files were both given; choose one"
                )));
            }
            tracing::warn!(%role, "running WITHOUT TLS (--insecure): anyone who reaches the ports can call them");
            return Ok(Transport::Plaintext);
        }
        let (Some(ca), Some(cert), Some(key)) = (&paths.ca, &paths.cert, &paths.key) else {
            return Err(SecurityError::Invalid(format!(
                "{role}: TLS needs --tls-ca, --tls-cert and --tls-key (make them with `labelfleet certs`), or pass --insecure to run without TLS"
            )));
        };
        Transport::load(ca, Some((cert, key)))
    }

    /// The transport of a client: TLS when a CA is given (with a client certificate when a
    /// certificate and key are given too), plaintext otherwise.
    pub fn for_client(paths: &TlsPaths) -> Result<Transport, SecurityError> {
        match (&paths.ca, &paths.cert, &paths.key) {
            (None, None, None) => Ok(Transport::Plaintext),
            (Some(ca), None, None) => Transport::load(ca, None),
            (Some(ca), Some(cert), Some(key)) => Transport::load(ca, Some((cert, key))),
            _ => Err(SecurityError::Invalid(
                "TLS: a client certificate needs --tls-ca, --tls-cert and --tls-key together"
                    .into(),
            )),
        }
    }

    fn load(ca: &Path, identity: Option<(&PathBuf, &PathBuf)>) -> Result<Transport, SecurityError> {
        let ca = Certificate::from_pem(read("CA certificate", ca)?);
        let identity = match identity {
            Some((cert, key)) => Some(Identity::from_pem(
                read("certificate", cert)?,
                read("private key", key)?,
            )),
            None => None,
        };
        Ok(Transport::Tls(Arc::new(TlsMaterial { ca, identity })))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The server side: `None` for plaintext. Peers must present a certificate signed by the
    /// CA when `client_certs` is [`ClientCerts::Required`]; with `Optional` (the coordinator,
    /// whose clients are people with bearer tokens) a certificate is checked when presented.
    pub fn server_tls(
        &self,
        client_certs: ClientCerts,
    ) -> Result<Option<ServerTlsConfig>, SecurityError> {
        let Transport::Tls(m) = self else {
            return Ok(None);
        };
        let identity = m.identity.clone().ok_or_else(|| {
            SecurityError::Invalid("a TLS server needs a certificate and a key".into())
        })?;
        Ok(Some(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(m.ca.clone())
                .client_auth_optional(client_certs == ClientCerts::Optional),
        ))
    }

    /// An endpoint for `address` (`host:port`, or a URL) served by a `server` role: over TLS the
    /// server must present a certificate of that role.
    pub fn endpoint(&self, address: &str, server: Role) -> Result<Endpoint, SecurityError> {
        let host = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address);
        let bad = |e: tonic::transport::Error| {
            SecurityError::Invalid(format!("address `{address}`: {e}"))
        };
        match self {
            Transport::Plaintext => Endpoint::from_shared(format!("http://{host}")).map_err(bad),
            Transport::Tls(m) => {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(m.ca.clone())
                    .domain_name(server.domain());
                if let Some(id) = &m.identity {
                    tls = tls.identity(id.clone());
                }
                Endpoint::from_shared(format!("https://{host}"))
                    .map_err(bad)?
                    .tls_config(tls)
                    .map_err(bad)
            }
        }
    }
}

/// A gRPC server builder with this transport's TLS and the `limits` on streams per
/// connection. Message sizes are set per service (`max_decoding_message_size`).
pub fn server_builder(
    transport: &Transport,
    client_certs: ClientCerts,
    limits: &crate::limits::Limits,
    metrics: &crate::metrics::GrpcMetrics,
) -> Result<MeteredServer, SecurityError> {
    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    let builder = match transport.server_tls(client_certs)? {
        Some(tls) => builder
            .tls_config(tls)
            .map_err(|e| SecurityError::Invalid(format!("TLS: {e}")))?,
        None => builder,
    };
    Ok(builder.layer(metrics.layer()))
}

/// A role's gRPC server: TLS as configured, every call counted and timed.
pub type MeteredServer = tonic::transport::Server<
    tower::layer::util::Stack<crate::metrics::GrpcMetricsLayer, tower::layer::util::Identity>,
>;

/// Serves `grpc.health.v1` alone, in plaintext, on `addr`: kubelet's gRPC probes cannot speak
/// TLS, and a health answer (SERVING or NOT_SERVING) says nothing secret. Returns the bound
/// address; the server runs until the process exits.
pub async fn serve_health<T: tonic_health::pb::health_server::Health>(
    addr: std::net::SocketAddr,
    health: tonic_health::pb::health_server::HealthServer<T>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health port stopped");
        }
    });
    Ok(bound)
}

/// Whether a TLS server requires its peers to present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    Required,
    Optional,
}

/// Who is calling, as their certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    /// Set when the certificate is bound to one name (a worker id).
    pub name: Option<String>,
}

/// The identity in a peer's certificate: its first `spiffe://labelfleet/...` URI SAN.
pub fn peer_identity<T>(req: &Request<T>) -> Option<Peer> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    identity_of_der(leaf.as_ref())
}

/// The role (and name) a DER certificate carries.
pub fn identity_of_der(der: &[u8]) -> Option<Peer> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => {
            let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
            let (role, name) = match rest.split_once('/') {
                Some((r, n)) => (r, Some(n.to_string())),
                None => (rest, None),
            };
            Some(Peer {
                role: Role::parse(role)?,
                name,
            })
        }
        _ => None,
    })
}

/// What a server enforces, fixed by its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Plaintext: no identities to check.
    Open,
    /// TLS: callers are checked against the roles each call allows.
    Verified,
}

impl From<&Transport> for Access {
    fn from(t: &Transport) -> Access {
        match t {
            Transport::Plaintext => Access::Open,
            Transport::Tls(_) => Access::Verified,
        }
    }
}

impl Access {
    /// Checks that the caller of `call` holds a certificate of one of `allowed` roles.
    /// UNAUTHENTICATED without a certificate, PERMISSION_DENIED with one of another role.
    /// Returns the caller (`None` on an open server).
    pub fn require<T>(
        self,
        req: &Request<T>,
        call: &str,
        allowed: &[Role],
    ) -> Result<Option<Peer>, Status> {
        if self == Access::Open {
            return Ok(None);
        }
        let wanted = || {
            allowed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let Some(peer) = peer_identity(req) else {
            return Err(Status::unauthenticated(format!(
                "{call}: needs a client certificate of role {} signed by the cluster CA",
                wanted()
            )));
        };
        if !allowed.contains(&peer.role) {
            return Err(Status::permission_denied(format!(
                "{call}: a certificate of role {} may not call this (needs {})",
                peer.role,
                wanted()
            )));
        }
        Ok(Some(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert!(r.uri(None).starts_with(ROLE_URI_PREFIX));
            assert!(r.domain().ends_with(ROLE_DOMAIN_SUFFIX));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn a_role_needs_tls_files_or_insecure() {
        let err = Transport::for_role(Role::Worker, &TlsPaths::default(), false).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        let t = Transport::for_role(Role::Worker, &TlsPaths::default(), true).unwrap();
        assert!(!t.is_tls());
        let both = TlsPaths {
            ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(Transport::for_role(Role::Worker, &both, true).is_err());
    }

    #[test]
    fn an_open_server_lets_anyone_call() {
        let req = Request::new(());
        assert!(matches!(
            Access::Open.require(&req, "Drain", &[Role::Operator]),
            Ok(None)
        ));
        let denied = Access::Verified
            .require(&req, "Drain", &[Role::Operator])
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::Unauthenticated);
        assert!(
            denied.message().contains("operator"),
            "{}",
            denied.message()
        );
    }
}
