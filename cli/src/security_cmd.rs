//! Security flags shared by the roles and the clients, and the commands that make what they
//! read: `certs` (a CA and one certificate per role), `tokens add` (a client's bearer token),
//! and `drain` (an operator drains a worker, over mTLS).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use labelfleet_cluster::certs::{generate, CertPlan, CertRequest};
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::EtcdSecurity;
use labelfleet_cluster::security::{Role, TlsPaths, Transport};
use labelfleet_cluster::tokens::{Permission, TokenFile};
use std::path::PathBuf;

/// TLS files: the cluster CA, and a certificate with its key (a role's, or an operator's).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsFileArgs {
    /// The cluster CA (PEM) that signed every role's certificate.
    #[arg(long, env = "LABELFLEET_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// A certificate (PEM) from `labelfleet certs`: the role's, or an operator's for a client.
    #[arg(long, env = "LABELFLEET_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "LABELFLEET_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

impl TlsFileArgs {
    fn paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }
}

/// TLS of a cluster role, and how it reaches etcd.
#[derive(Args, Clone, Debug)]
pub struct RoleSecurityArgs {
    #[command(flatten)]
    tls: TlsFileArgs,
    /// Serve and dial without TLS: no identity is checked. Only for a trusted network.
    #[arg(long, env = "LABELFLEET_INSECURE")]
    insecure: bool,
    /// CA of etcd's server certificate: connect to etcd over TLS.
    #[arg(long, env = "LABELFLEET_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (`--client-cert-auth`).
    #[arg(long, env = "LABELFLEET_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    #[arg(long, env = "LABELFLEET_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// etcd user (etcd's own authentication); the password comes from LABELFLEET_ETCD_PASSWORD.
    #[arg(long, env = "LABELFLEET_ETCD_USER")]
    etcd_user: Option<String>,
    #[arg(long, env = "LABELFLEET_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// Also serve grpc.health.v1 alone, in plaintext, here (kubelet's gRPC probes cannot speak
    /// TLS).
    #[arg(long, env = "LABELFLEET_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
}

impl RoleSecurityArgs {
    pub fn transport(&self, role: Role) -> Result<Transport> {
        Ok(Transport::for_role(role, &self.tls.paths(), self.insecure)?)
    }

    pub fn etcd(&self) -> Result<EtcdSecurity> {
        let user = match (&self.etcd_user, &self.etcd_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => bail!("--etcd-user and LABELFLEET_ETCD_PASSWORD go together"),
        };
        Ok(EtcdSecurity {
            tls: TlsPaths {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            },
            user,
        })
    }
}

/// Limits of a server (each with a safe default).
#[derive(Args, Clone, Debug)]
pub struct LimitArgs {
    /// Largest gRPC message, MiB.
    #[arg(long, default_value_t = 32)]
    max_message_mib: usize,
    /// Concurrent calls (HTTP/2 streams) per connection.
    #[arg(long, default_value_t = 256)]
    max_concurrent_streams: u32,
    /// Bytes of documents one corpus upload may send, MiB.
    #[arg(long, default_value_t = 16 * 1024)]
    max_upload_mib: u64,
    /// Pairs one labeling job may hold.
    #[arg(long, default_value_t = 100_000_000)]
    max_pairs_per_job: u64,
    /// WatchJob streams one client may hold open.
    #[arg(long, default_value_t = 16)]
    max_watches_per_client: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_mib.max(1) << 20,
            max_concurrent_streams: self.max_concurrent_streams.max(1),
            max_upload_bytes: self.max_upload_mib.max(1) << 20,
            max_pairs_per_job: self.max_pairs_per_job.max(1),
            max_watches_per_client: self.max_watches_per_client.max(1),
        }
    }
}

/// How a client reaches a secured cluster.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientSecurityArgs {
    // With --tls-ca the client talks TLS (with --tls-cert/--tls-key, as an operator).
    #[command(flatten)]
    tls: TlsFileArgs,
    /// Bearer token (from `labelfleet tokens add`).
    #[arg(long, env = "LABELFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientSecurityArgs {
    pub fn credentials(&self) -> Result<labelfleet_client::Credentials> {
        let transport = Transport::for_client(&self.tls.paths())?;
        Ok(labelfleet_client::Credentials {
            transport,
            token: self.token.clone().filter(|t| !t.is_empty()),
        })
    }
}

#[derive(Args)]
pub struct CertsArgs {
    /// Folder to write ca.pem, ca.key, <role>.pem, <role>.key and etcd-server.pem/.key into.
    #[arg(long, default_value = "labelfleet-certs")]
    out: PathBuf,
    /// Certificates to make: roles (coordinator, worker, trainer, operator), or `worker/<id>`
    /// for a certificate bound to one worker id. Default: one per role.
    #[arg(long, value_delimiter = ',')]
    certs: Vec<String>,
    /// Names etcd's server certificate is valid for (host names or IPs).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    etcd_names: Vec<String>,
    /// Days the certificates are valid (the CA twice as long).
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn certs(a: CertsArgs) -> Result<()> {
    let mut plan = CertPlan {
        etcd_names: a.etcd_names,
        days: a.days,
        ..Default::default()
    };
    if !a.certs.is_empty() {
        plan.certs = a
            .certs
            .iter()
            .map(|c| CertRequest::parse(c))
            .collect::<Result<_, _>>()?;
    }
    let files = generate(&a.out, &plan).with_context(|| format!("certs in {}", a.out.display()))?;
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!(
        "wrote {} files; keep ca.key offline: it signs new certificates. For the Helm chart: \
         kubectl create secret generic <release>-<role>-tls --from-file=ca.pem --from-file=tls.crt=<role>.pem --from-file=tls.key=<role>.key",
        files.len()
    );
    Ok(())
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make a token: prints it once and stores only its SHA-256 in the file.
    Add(TokensAddArgs),
}

#[derive(Args)]
pub struct TokensAddArgs {
    /// The token file the coordinator reads (`--tokens`).
    #[arg(long, default_value = "labelfleet-tokens.json")]
    file: PathBuf,
    /// Who the token is for (shown in logs and refusals).
    #[arg(long)]
    name: String,
    /// submit, read, cancel, admin (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "submit,read")]
    permissions: Vec<String>,
}

pub fn tokens(c: TokensCommand) -> Result<()> {
    match c {
        TokensCommand::Add(a) => {
            let permissions = a
                .permissions
                .iter()
                .map(|p| {
                    Permission::parse(p.trim()).with_context(|| {
                        format!("--permissions: `{p}` is not one of submit, read, cancel, admin")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let token = TokenFile::add(&a.file, &a.name, permissions)?;
            println!("{token}");
            eprintln!(
                "token `{}` added to {} (only its hash is stored; this is the one time it is shown)",
                a.name,
                a.file.display()
            );
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct DrainArgs {
    /// The worker's control address (`host:port`).
    #[arg(long)]
    worker: String,
    /// How long the worker may take to finish what it holds, ms.
    #[arg(long, default_value_t = 60_000)]
    grace_ms: u32,
    #[command(flatten)]
    security: ClientSecurityArgs,
}

/// Asks a worker to stop leasing and finish what it holds (an operator certificate over TLS).
pub fn drain(a: DrainArgs) -> Result<()> {
    use labelfleet_proto::v1::worker_control_client::WorkerControlClient;
    use labelfleet_proto::v1::DrainRequest;
    let transport = a.security.credentials()?.transport;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = transport
            .endpoint(&a.worker, Role::Worker)?
            .connect()
            .await
            .with_context(|| format!("worker {}", a.worker))?;
        let r = WorkerControlClient::new(channel)
            .drain(DrainRequest {
                grace_ms: a.grace_ms,
            })
            .await
            .map_err(|s| anyhow::anyhow!("drain {}: {} ({:?})", a.worker, s.message(), s.code()))?
            .into_inner();
        println!("draining; {} task(s) in flight", r.tasks_in_flight);
        Ok(())
    })
}
