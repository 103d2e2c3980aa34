//! A labelfleet cluster on loopback for tests: a real etcd (Debian's `etcd-server`, installed
//! by `scripts/setup.sh`), coordinator replicas and workers as real `labelfleet` processes,
//! talking gRPC over sockets, sharing an object store: a directory, or (`Store::S3`) a bucket
//! on a real S3-compatible server (moto's `moto_server`, installed into the venv by
//! `scripts/setup.sh`) that the harness starts on a free loopback port. Killing a process is
//! `SIGKILL`, as `kill -9` would.

#![allow(dead_code)]

use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::security::{TlsPaths, Transport};
use labelfleet_proto::v1::{Job, JobState, ResultBatch};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `labelfleet` binary next to this test's executable (built by `cargo test --workspace`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("labelfleet");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A loopback port for a server this test starts: below the ephemeral range, so that no
/// connection of the cluster's processes takes it before the server binds it.
pub fn free_port() -> u16 {
    labelfleet_cluster::ports::free_loopback_port().expect("a free loopback port")
}

/// A child process with its log file; killed with SIGKILL when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Proc {
    spawn_env(name, program, args, dir, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_env(
    name: &str,
    program: &Path,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    // Appended to, so a process restarted under the same name keeps its predecessor's log.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "labelfleet=info,warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
    Proc {
        name: name.into(),
        child,
        log,
    }
}

/// Where the cluster keeps its bulk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A directory in the test's temp folder.
    Local,
    /// `s3://labelfleet/tests/store` on a moto server started for the test.
    S3,
}

pub struct Options {
    pub coordinators: usize,
    pub workers: usize,
    pub task_lease_ms: u64,
    pub election_ttl_s: u64,
    pub registration_ttl_s: u64,
    pub store: Store,
    /// Start a trainer with the cluster, on a port picked before the coordinators start, so
    /// that every coordinator is given `--trainer 127.0.0.1:<port>` (and a `--scratch` folder
    /// of its own): what a corpus job needs.
    pub trainer: bool,
    /// The trainer's `--max-tokens` (a corpus job's student inputs: the `--student-max-len`
    /// of the `labelfleet run` that submits it).
    pub trainer_max_tokens: usize,
    /// Environment variables of the workers only (an API key, say).
    pub worker_env: Vec<(String, String)>,
    /// Leases per task before it fails (`--max-attempts`).
    pub max_attempts: u32,
    /// mTLS between the roles (certificates from `labelfleet certs`) and bearer tokens for
    /// clients (`labelfleet tokens add`); otherwise every role runs `--insecure`.
    pub secure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            coordinators: 2,
            workers: 3,
            task_lease_ms: 4_000,
            election_ttl_s: 3,
            registration_ttl_s: 3,
            store: Store::Local,
            trainer: false,
            trainer_max_tokens: 48,
            worker_env: Vec::new(),
            max_attempts: 4,
            secure: false,
        }
    }
}

/// The bucket every S3 test uses (created when the server starts).
pub const BUCKET: &str = "labelfleet";

/// A real S3-compatible server on a free loopback port: moto's `moto_server` (it honours
/// `If-None-Match: *`, the create-once write of a task's results). Killed when dropped.
pub struct S3Server {
    pub proc: Proc,
    pub port: u16,
}

impl S3Server {
    /// Starts the server (logging to `dir/s3.log`) and creates [`BUCKET`].
    pub fn start(dir: &Path) -> S3Server {
        let program = which("moto_server")
            .or_else(|| {
                let p = labelfleet_home().join("venv/bin/moto_server");
                p.is_file().then_some(p)
            })
            .expect(
                "moto_server is not installed: run scripts/setup.sh (moto[server] in the venv)",
            );
        let port = free_port();
        let args: Vec<String> = vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let proc = spawn("s3", &program, &args, dir);
        let server = S3Server { proc, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start\n{}",
                server.proc.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.create_bucket(BUCKET);
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `PUT /bucket` (moto accepts it unsigned).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("S3 port");
        write!(
            sock,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("create bucket");
        let mut text = String::new();
        let _ = sock.read_to_string(&mut text);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {text}"
        );
    }

    /// The standard AWS variables that point a process at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `url` (an `s3://` store) opened from this process, with the endpoint and credentials
    /// as URL options (the test process's environment is left alone).
    pub fn blobs(&self, url: &str) -> Blobs {
        let sep = if url.contains('?') { '&' } else { '?' };
        Blobs::open(&format!(
            "{url}{sep}endpoint={}&access_key_id=test&secret_access_key=test&region=us-east-1",
            self.endpoint()
        ))
        .expect("opening the S3 store")
    }
}

/// `$LABELFLEET_HOME`, as the CLI resolves it.
pub fn labelfleet_home() -> PathBuf {
    if let Some(h) = std::env::var_os("LABELFLEET_HOME") {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("labelfleet")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The S3 server of a `Store::S3` cluster.
    pub s3: Option<S3Server>,
    pub etcd: Option<Proc>,
    pub etcd_port: u16,
    etcd_peer_port: u16,
    pub coordinators: Vec<Proc>,
    pub coordinator_ports: Vec<u16>,
    pub metrics_ports: Vec<u16>,
    /// Each coordinator's plaintext `grpc.health.v1` port (`--health-listen`).
    pub health_ports: Vec<u16>,
    pub workers: Vec<Proc>,
    pub worker_ports: Vec<u16>,
    /// The trainer of an `Options::trainer` cluster, and its port (0 without one).
    pub trainer: Option<Proc>,
    pub trainer_port: u16,
    pub options: Options,
    /// The certificates and tokens of a secure cluster.
    pub security: Option<Security>,
}

/// What a secure cluster's roles and clients were given.
pub struct Security {
    /// The folder `labelfleet certs` wrote (ca.pem, <role>.pem, <role>.key, ...).
    pub certs: PathBuf,
    pub tokens_file: PathBuf,
    /// A token with every permission, and one that may only read.
    pub admin_token: String,
    pub read_token: String,
}

impl Security {
    fn make(dir: &Path) -> Security {
        let certs = dir.join("certs");
        let out = Command::new(binary())
            .args(["certs", "--out"])
            .arg(&certs)
            .args([
                "--certs",
                "coordinator,worker,trainer,operator,worker/w0,worker/w1",
            ])
            .output()
            .expect("labelfleet certs");
        assert!(
            out.status.success(),
            "certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens_file = dir.join("tokens.json");
        let token = |name: &str, permissions: &str| {
            let out = Command::new(binary())
                .args(["tokens", "add", "--file"])
                .arg(&tokens_file)
                .args(["--name", name, "--permissions", permissions])
                .output()
                .expect("labelfleet tokens add");
            assert!(
                out.status.success(),
                "tokens: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let admin_token = token("admin", "admin");
        let read_token = token("reader", "read");
        Security {
            certs,
            tokens_file,
            admin_token,
            read_token,
        }
    }

    /// The flags of a role with the certificate `stem` (`worker`, `worker-w0`, ...), which is
    /// also its etcd client certificate.
    pub fn role_args(&self, stem: &str) -> Vec<String> {
        let f = |name: String| self.certs.join(name).display().to_string();
        let mut args = Vec::new();
        for prefix in ["--tls", "--etcd"] {
            args.extend([
                format!("{prefix}-ca"),
                f("ca.pem".into()),
                format!("{prefix}-cert"),
                f(format!("{stem}.pem")),
                format!("{prefix}-key"),
                f(format!("{stem}.key")),
            ]);
        }
        args
    }

    /// TLS material of a client holding the certificate `stem` (none: CA only).
    pub fn transport(&self, stem: Option<&str>) -> Transport {
        let paths = TlsPaths {
            ca: Some(self.certs.join("ca.pem")),
            cert: stem.map(|s| self.certs.join(format!("{s}.pem"))),
            key: stem.map(|s| self.certs.join(format!("{s}.key"))),
        };
        Transport::for_client(&paths).expect("client TLS")
    }
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let s3 = (options.store == Store::S3).then(|| S3Server::start(dir.path()));
        let mut c = Cluster {
            dir,
            s3,
            etcd: None,
            etcd_port: free_port(),
            etcd_peer_port: free_port(),
            coordinators: Vec::new(),
            coordinator_ports: Vec::new(),
            metrics_ports: Vec::new(),
            health_ports: Vec::new(),
            workers: Vec::new(),
            worker_ports: Vec::new(),
            trainer: None,
            trainer_port: 0,
            options,
            security: None,
        };
        if c.options.secure {
            c.security = Some(Security::make(c.dir.path()));
        }
        c.start_etcd();
        if c.options.trainer {
            c.trainer_port = free_port();
            c.trainer = Some(c.spawn_trainer("trainer", c.trainer_port, 0.0));
        }
        for i in 0..c.options.coordinators {
            let port = free_port();
            c.coordinator_ports.push(port);
            c.metrics_ports.push(free_port());
            c.health_ports.push(free_port());
            let p = c.spawn_coordinator(i, port);
            c.coordinators.push(p);
            // The first replica campaigns first and leads.
            if i == 0 {
                c.wait_leader(Duration::from_secs(60));
            }
        }
        for i in 0..c.options.workers {
            let port = free_port();
            c.worker_ports.push(port);
            let p = c.spawn_worker(i, port);
            c.workers.push(p);
        }
        c
    }

    /// etcd's client URL: TLS on a secure cluster.
    pub fn etcd_url(&self) -> String {
        let scheme = if self.options.secure { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.etcd_port)
    }

    /// The local store's directory (the S3 store has none).
    pub fn store(&self) -> PathBuf {
        assert!(self.s3.is_none(), "an S3 cluster has no store directory");
        self.dir.path().join("store")
    }

    /// The `--store` value every role gets.
    pub fn store_url(&self) -> String {
        match self.s3 {
            Some(_) => format!("s3://{BUCKET}/tests/store"),
            None => self.dir.path().join("store").display().to_string(),
        }
    }

    /// Environment of the processes that open the store (the S3 endpoint and credentials).
    pub fn store_env(&self) -> Vec<(String, String)> {
        self.s3.as_ref().map(S3Server::env).unwrap_or_default()
    }

    /// The cluster's store, opened from the test.
    pub fn blobs(&self) -> Blobs {
        match &self.s3 {
            Some(s3) => s3.blobs(&self.store_url()),
            None => Blobs::local(&self.store()).expect("local store"),
        }
    }

    pub fn start_etcd(&mut self) {
        let data = self.dir.path().join("etcd");
        let args: Vec<String> = vec![
            "--name".into(),
            "test".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            self.etcd_url(),
            "--advertise-client-urls".into(),
            self.etcd_url(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{}", self.etcd_peer_port),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{}", self.etcd_peer_port),
            "--initial-cluster".into(),
            format!("test=http://127.0.0.1:{}", self.etcd_peer_port),
        ];
        let mut args = args;
        if let Some(s) = &self.security {
            // etcd serves TLS and takes only clients with a certificate of the cluster CA
            let f = |name: &str| s.certs.join(name).display().to_string();
            args.extend([
                "--cert-file".into(),
                f("etcd-server.pem"),
                "--key-file".into(),
                f("etcd-server.key"),
                "--trusted-ca-file".into(),
                f("ca.pem"),
                "--client-cert-auth".into(),
            ]);
        }
        let etcd = which("etcd").expect("etcd is not installed: run scripts/setup.sh");
        self.etcd = Some(spawn("etcd", &etcd, &args, self.dir.path()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.etcd_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill_etcd(&mut self) {
        if let Some(mut e) = self.etcd.take() {
            e.kill9();
        }
    }

    fn spawn_coordinator(&self, i: usize, port: u16) -> Proc {
        let args: Vec<String> = vec![
            "coordinator".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--etcd".into(),
            self.etcd_url(),
            "--store".into(),
            self.store_url(),
            "--task-lease-ms".into(),
            self.options.task_lease_ms.to_string(),
            "--election-ttl-s".into(),
            self.options.election_ttl_s.to_string(),
            "--max-attempts".into(),
            self.options.max_attempts.to_string(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", self.metrics_ports[i]),
            "--health-listen".into(),
            format!("127.0.0.1:{}", self.health_ports[i]),
        ];
        let mut args = args;
        args.extend(self.role_args("coordinator"));
        if let Some(s) = &self.security {
            args.extend(["--tokens".into(), s.tokens_file.display().to_string()]);
        }
        if self.options.trainer {
            args.extend([
                "--trainer".into(),
                format!("127.0.0.1:{}", self.trainer_port),
                "--scratch".into(),
                self.dir
                    .path()
                    .join(format!("scratch-coord{i}"))
                    .display()
                    .to_string(),
            ]);
        }
        spawn_env(
            &format!("coordinator{i}"),
            &binary(),
            &args,
            self.dir.path(),
            &self.store_env(),
        )
    }

    /// Starts replica `i` again with the same arguments and port (after [`Proc::kill9`], say),
    /// appending to its log; it rejoins as a standby while another replica leads.
    pub fn restart_coordinator(&mut self, i: usize) {
        self.coordinators[i].kill9();
        let p = self.spawn_coordinator(i, self.coordinator_ports[i]);
        self.coordinators[i] = p;
    }

    pub fn spawn_worker(&self, i: usize, port: u16) -> Proc {
        let args: Vec<String> = vec![
            "worker".into(),
            "--id".into(),
            format!("w{i}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--etcd".into(),
            self.etcd_url(),
            "--device".into(),
            "cpu".into(),
            "--threads".into(),
            "1".into(),
            "--capacity".into(),
            "2".into(),
            "--checkpoints".into(),
            self.dir
                .path()
                .join(format!("checkpoints-w{i}"))
                .display()
                .to_string(),
            "--registration-ttl-s".into(),
            self.options.registration_ttl_s.to_string(),
            "--store".into(),
            self.store_url(),
        ];
        let mut args = args;
        // w0 and w1 get certificates bound to their ids; the others share the worker one.
        let stem = match i {
            0 | 1 => format!("worker-w{i}"),
            _ => "worker".into(),
        };
        args.extend(self.role_args(&stem));
        let mut env = self.store_env();
        env.extend(self.options.worker_env.iter().cloned());
        spawn_env(
            &format!("worker{i}"),
            &binary(),
            &args,
            self.dir.path(),
            &env,
        )
    }

    pub fn coordinator_list(&self) -> String {
        self.coordinator_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The flags a role runs with: its certificate on a secure cluster, else `--insecure`.
    pub fn role_args(&self, stem: &str) -> Vec<String> {
        match &self.security {
            Some(s) => s.role_args(stem),
            None => vec!["--insecure".into()],
        }
    }

    /// What a client of this cluster presents: the CA and the admin token when secure.
    pub fn credentials(&self) -> labelfleet_client::Credentials {
        match &self.security {
            Some(s) => labelfleet_client::Credentials {
                transport: s.transport(None),
                token: Some(s.admin_token.clone()),
            },
            None => labelfleet_client::Credentials::default(),
        }
    }

    /// Index of the replica that reports the leader signal (`labelfleet.v1.Leader` SERVING):
    /// every replica answers clients, standbys by forwarding to the leader.
    pub fn leader(&self) -> Option<usize> {
        (0..self.coordinator_ports.len())
            .find(|&i| self.health_of(i, "labelfleet.v1.Leader") == "SERVING")
    }

    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no leader elected\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the `labelfleet` CLI; panics with its output when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(binary());
        if let Some(s) = &self.security {
            cmd.env("LABELFLEET_TLS_CA", s.certs.join("ca.pem"))
                .env("LABELFLEET_TOKEN", &s.admin_token);
        }
        let out = cmd
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running labelfleet");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "labelfleet {args:?} failed:\n{text}\n{}",
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Submits a labeling job through the CLI and returns its id.
    pub fn submit(&self, corpus: &Path, pairs: &Path, task_size: usize) -> String {
        self.submit_with(corpus, pairs, task_size, &["--model", "minilm"])
    }

    /// Submits with a model choice (`--model NAME` or `--checkpoint ID`).
    pub fn submit_with(
        &self,
        corpus: &Path,
        pairs: &Path,
        task_size: usize,
        model: &[&str],
    ) -> String {
        let task_size = task_size.to_string();
        let corpus = corpus.display().to_string();
        let pairs = pairs.display().to_string();
        let list = self.coordinator_list();
        let mut args: Vec<&str> = vec![
            "submit",
            "--coordinator",
            &list,
            "--corpus",
            &corpus,
            "--pairs",
            &pairs,
            "--task-size",
            &task_size,
            "--max-tokens",
            "48",
        ];
        args.extend_from_slice(model);
        let out = self.cli(&args);
        out.lines().last().unwrap_or_default().trim().to_string()
    }

    /// Starts a trainer process sharing the store, with its own scratch folder (so a second
    /// trainer reads checkpoints from the store); pushes are throttled to `push_rate_mib_s`.
    pub fn spawn_trainer(&self, name: &str, port: u16, push_rate_mib_s: f64) -> Proc {
        let args: Vec<String> = vec![
            "trainer".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--etcd".into(),
            self.etcd_url(),
            "--store".into(),
            self.store_url(),
            "--scratch".into(),
            self.dir
                .path()
                .join(format!("scratch-{name}"))
                .display()
                .to_string(),
            "--device".into(),
            "cpu".into(),
            "--threads".into(),
            "1".into(),
            "--max-tokens".into(),
            self.options.trainer_max_tokens.to_string(),
            "--push-rate-mib-s".into(),
            push_rate_mib_s.to_string(),
            "--reconcile-interval-s".into(),
            "2".into(),
        ];
        let mut args = args;
        args.extend(self.role_args("trainer"));
        spawn_env(name, &binary(), &args, self.dir.path(), &self.store_env())
    }

    /// The job as the current leader sees it, through the cluster client (None while no
    /// leader answers).
    pub fn job(&self, job_id: &str) -> Option<Job> {
        let endpoints = labelfleet_client::endpoints(&self.coordinator_list());
        // the client's channel lives on the runtime that made it: one runtime for both calls
        runtime().block_on(async {
            let mut client = labelfleet_client::Client::connect_with(
                endpoints,
                Duration::from_secs(1),
                self.credentials(),
            )
            .await
            .ok()?;
            client.get(job_id).await.ok()
        })
    }

    /// Submits a job spec through the cluster client: the job id, or the refusal.
    pub fn submit_spec(
        &self,
        spec: labelfleet_proto::v1::JobSpec,
    ) -> Result<String, labelfleet_client::ClientError> {
        runtime().block_on(async {
            let mut client = self.client().await;
            client.submit(spec, "").await.map(|job| job.job_id)
        })
    }

    /// A client of the cluster's leader (waits up to 30 s for one).
    async fn client(&self) -> labelfleet_client::Client {
        labelfleet_client::Client::connect_with(
            labelfleet_client::endpoints(&self.coordinator_list()),
            Duration::from_secs(30),
            self.credentials(),
        )
        .await
        .expect("client")
    }

    /// A job's results (labels, queries or hits) through the cluster client.
    pub fn results(&self, job_id: &str, stage: &str) -> Vec<ResultBatch> {
        runtime().block_on(async {
            let mut client = self.client().await;
            let mut batches = vec![];
            client
                .fetch(job_id, stage, |b| {
                    batches.push(b);
                    Ok(())
                })
                .await
                .expect("fetch");
            batches
        })
    }

    /// Waits until `done + failed` pairs reach `fraction` of the total.
    pub fn wait_progress(&self, job_id: &str, fraction: f64, timeout: Duration) -> Job {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(job) = self.job(job_id) {
                let s = job.stages.first().cloned().unwrap_or_default();
                if s.total > 0 && (s.done + s.failed) as f64 >= fraction * s.total as f64
                    || job.state >= JobState::Succeeded as i32
                {
                    return job;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not reach {fraction} in {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_finished(&self, job_id: &str, timeout: Duration) -> Job {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(job) = self.job(job_id) {
                if job.state >= JobState::Succeeded as i32 {
                    return job;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not finish in {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Labels fetched through the CLI, one JSON value per line, schema-checked.
    pub fn fetch_labels(&self, job_id: &str) -> Vec<serde_json::Value> {
        self.fetch_labels_via(&self.coordinator_list(), job_id)
    }

    /// [`Cluster::fetch_labels`] from the given coordinator addresses.
    pub fn fetch_labels_via(&self, coordinators: &str, job_id: &str) -> Vec<serde_json::Value> {
        let out = self.dir.path().join(format!("{job_id}.labels.jsonl"));
        self.cli(&[
            "fetch",
            "--coordinator",
            coordinators,
            job_id,
            "--output",
            &out.display().to_string(),
        ]);
        let mut labels = Vec::new();
        for line in std::fs::read_to_string(&out).expect("labels file").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("label JSON");
            let grade = v["grade"].as_u64().expect("grade");
            assert!(grade <= 3, "grade out of range: {line}");
            let dist: Vec<f64> = v["distribution"]
                .as_array()
                .expect("distribution")
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect();
            assert_eq!(dist.len(), 4, "{line}");
            assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{line}");
            for field in ["query_id", "doc_id", "model", "prompt_version"] {
                assert!(
                    v[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{field} in {line}"
                );
            }
            labels.push(v);
        }
        labels
    }

    /// Labels fetched through the CLI: pair id -> number of labels received for it.
    pub fn fetch_label_counts(&self, job_id: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for v in self.fetch_labels(job_id) {
            *counts
                .entry(v["id"].as_str().expect("id").to_string())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Labels as committed in the object store, read straight from the result objects:
    /// pair id -> count, over every result object of the job.
    pub fn stored_label_counts(&self, job_id: &str) -> HashMap<String, usize> {
        let blobs = self.blobs();
        let rt = runtime();
        let prefix = format!("jobs/{job_id}/results");
        let keys = rt.block_on(blobs.list(&prefix)).expect("listing results");
        assert!(!keys.is_empty(), "no result objects under {prefix}");
        let mut counts = HashMap::new();
        for key in keys.iter().filter(|k| k.ends_with(".pb")) {
            let bytes = rt
                .block_on(blobs.get(key))
                .expect("result object")
                .expect("listed object exists");
            let batch = ResultBatch::decode(bytes.as_ref()).expect("result batch");
            for l in batch.labels {
                *counts.entry(l.pair_id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Scrapes a coordinator's Prometheus metrics: name -> value.
    pub fn metrics(&self, coordinator: usize) -> HashMap<String, f64> {
        scrape(self.metrics_ports[coordinator])
    }

    /// The gRPC health status a coordinator reports for the whole server (its readiness).
    pub fn health(&self, coordinator: usize) -> String {
        self.health_of(coordinator, "")
    }

    /// The gRPC health status a coordinator reports for `service`, read from its plaintext
    /// health port as kubelet reads it; a replica that does not answer in 2 s (frozen) is
    /// `NO ANSWER`.
    pub fn health_of(&self, coordinator: usize, service: &str) -> String {
        health_status(self.health_ports[coordinator], service)
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self
            .coordinators
            .iter()
            .chain(self.workers.iter())
            .chain(self.trainer.iter())
            .chain(self.etcd.iter())
            .chain(self.s3.as_ref().map(|s| &s.proc))
        {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail(15)));
        }
        out
    }
}

/// The `grpc.health.v1` status for `service` on a plaintext health port of this machine.
pub fn health_status(port: u16, service: &str) -> String {
    runtime().block_on(async {
        let check = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .map_err(|_| "UNREACHABLE".to_string())?;
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            c.check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map(|r| r.into_inner().status().as_str_name().to_string())
            .map_err(|s| format!("ERROR {}", s.message()))
        };
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(status)) | Ok(Err(status)) => status,
            Err(_) => "NO ANSWER".to_string(),
        }
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The Cranfield collection: `../shared/data/cranfield` (or `$LABELFLEET_DATA/cranfield`), with
/// `corpus.jsonl`, `queries.tsv` and `qrels.txt`.
pub fn cranfield_dir() -> PathBuf {
    let data = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join("cranfield");
    assert!(
        data.join("corpus.jsonl").is_file(),
        "Cranfield not found under {}",
        data.display()
    );
    data
}

/// The first `n` Cranfield documents as `dir/corpus-<n>.jsonl`.
pub fn cranfield_slice(dir: &Path, n: usize) -> PathBuf {
    let corpus = std::fs::read_to_string(cranfield_dir().join("corpus.jsonl")).expect("corpus");
    let slice = dir.join(format!("corpus-{n}.jsonl"));
    let mut text = corpus.lines().take(n).collect::<Vec<_>>().join("\n");
    text.push('\n');
    std::fs::write(&slice, text).expect("corpus slice");
    slice
}

/// Test data from the Cranfield collection (real text): the corpus file, and `n` pairs of a
/// query with a document, written as `{id, query_id, query, doc_id}`. `bad` pair ids get an
/// empty query, which the engine refuses.
pub fn cranfield_pairs(dir: &Path, n: usize, bad: &[&str]) -> (PathBuf, PathBuf) {
    let data = cranfield_dir();
    let corpus = data.join("corpus.jsonl");
    assert!(corpus.is_file(), "{} is missing", corpus.display());
    let mut doc_ids = Vec::new();
    for line in std::fs::read_to_string(&corpus).expect("corpus").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("corpus JSON");
        // Documents with an empty body are rejected at upload; pairs must not point at them.
        if v["body"].as_str().is_some_and(|b| !b.trim().is_empty()) {
            doc_ids.push(v["id"].as_str().expect("id").to_string());
        }
    }
    let queries: Vec<(String, String)> = std::fs::read_to_string(data.join("queries.tsv"))
        .expect("queries")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let path = dir.join(format!("pairs-{n}.jsonl"));
    let mut text = String::new();
    for i in 0..n {
        let (qid, q) = &queries[i % queries.len()];
        // A fixed stride walks every (query, document) combination without repeats.
        let d = &doc_ids[(i * 7 + i / queries.len()) % doc_ids.len()];
        let id = format!("p{i}");
        let query = if bad.contains(&id.as_str()) {
            ""
        } else {
            q.as_str()
        };
        text.push_str(
            &serde_json::json!({"id": id, "query_id": qid, "query": query, "doc_id": d})
                .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&path, text).expect("pairs file");
    (corpus, path)
}

/// `GET /metrics` on a loopback port, parsed into name -> value.
pub fn scrape(port: u16) -> HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    sock.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}
