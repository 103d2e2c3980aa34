//! `labelfleet bench-dispatch`: how fast the coordinator hands out and commits work, and how
//! labeling throughput scales with workers, without GPUs.
//!
//! A real coordinator (gRPC on loopback, etcd or the embedded store, results in an object
//! store directory) serves simulated workers. Each simulated worker is a real gRPC client
//! that leases a task, spends a fixed time per pair (the engine stand-in, used by this
//! benchmark only), and commits one label per pair. Two measurements:
//! - dispatch: zero cost per pair, so the coordinator is the only limit (pairs/s);
//! - scaling: a fixed cost per pair; efficiency = throughput / (workers x one worker's).

use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_cluster::security::{Role, TlsPaths, Transport};
use labelfleet_cluster::MAX_MESSAGE_BYTES;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::task_service_client::TaskServiceClient;
use labelfleet_proto::v1::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DispatchBenchArgs {
    /// Worker counts to measure, comma-separated.
    #[arg(long, default_value = "1,8,64")]
    workers: String,
    /// Engine stand-in: milliseconds per pair for the scaling runs.
    #[arg(long, default_value_t = 2.0)]
    pair_cost_ms: f64,
    /// Seconds of work per worker in a scaling run (sets the job size).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Pairs in the dispatch run (zero cost per pair).
    #[arg(long, default_value_t = 300_000)]
    dispatch_pairs: usize,
    /// Workers in the dispatch run.
    #[arg(long, default_value_t = 64)]
    dispatch_workers: usize,
    /// Pairs per task.
    #[arg(long, default_value_t = 500)]
    task_size: u32,
    /// etcd endpoints (comma-separated); default: the embedded metadata store.
    #[arg(long, default_value = "")]
    etcd: String,
    /// Object store directory (default: a temporary one).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Append the results as one JSON line here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Failover: finished jobs to run before the leader is stopped (0 skips the measurement).
    #[arg(long, default_value_t = 0)]
    failover_jobs: usize,
    /// Failover: pairs per finished job.
    #[arg(long, default_value_t = 3_000_000)]
    failover_pairs: usize,
    /// Failover: pairs per task of the finished jobs.
    #[arg(long, default_value_t = 50)]
    failover_task_size: u32,
    /// Failover: the election TTL (a dead leader's key lives this long).
    #[arg(long, default_value_t = 5)]
    election_ttl_s: u64,
    /// Scale: jobs of these pair counts (comma-separated), each submitted by streaming to a
    /// coordinator running as its own process, whose peak RSS is measured; then fetched.
    #[arg(long, default_value = "")]
    scale_pairs: String,
    /// Append one JSON object per measurement here (`kind`: "job", "failover" or "tls").
    #[arg(long)]
    scale_out: Option<PathBuf>,
    /// Cost of TLS: this many rounds of the dispatch run over plaintext and over mTLS
    /// (certificates made for the run; workers, client and coordinator each with their
    /// role's), alternating, in one process; prints both rates side by side.
    #[arg(long, default_value_t = 0)]
    tls_rounds: usize,
}

/// The transports of one bench run: the coordinator's, the simulated workers' and the client's.
#[derive(Clone)]
struct BenchSecurity {
    coordinator: Transport,
    worker: Transport,
    client: Transport,
}

impl BenchSecurity {
    fn plaintext() -> Self {
        BenchSecurity {
            coordinator: Transport::Plaintext,
            worker: Transport::Plaintext,
            client: Transport::Plaintext,
        }
    }

    /// mTLS with certificates made in `dir`: the client is an operator (no token file).
    fn mtls(dir: &std::path::Path) -> Result<Self> {
        labelfleet_cluster::certs::generate(dir, &Default::default())?;
        let paths = |role: &str| TlsPaths {
            ca: Some(dir.join("ca.pem")),
            cert: Some(dir.join(format!("{role}.pem"))),
            key: Some(dir.join(format!("{role}.key"))),
        };
        Ok(BenchSecurity {
            coordinator: Transport::for_role(Role::Coordinator, &paths("coordinator"), false)?,
            worker: Transport::for_role(Role::Worker, &paths("worker"), false)?,
            client: Transport::for_client(&paths("operator"))?,
        })
    }
}

struct RunResult {
    workers: usize,
    pairs: u64,
    seconds: f64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.pairs as f64 / self.seconds
    }
}

pub fn run(a: DispatchBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let tmp = tempfile::tempdir()?;
        let store = a.store.clone().unwrap_or_else(|| tmp.path().to_path_buf());
        let etcd: Vec<String> = a
            .etcd
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let counts: Vec<usize> = a
            .workers
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .context("--workers: a comma-separated list of counts")
            })
            .collect::<Result<_>>()?;
        let meta = if etcd.is_empty() {
            "embedded store"
        } else {
            "etcd"
        };
        eprintln!(
            "coordinator on loopback gRPC, {meta}, results in {}",
            store.display()
        );

        if !a.scale_pairs.is_empty() {
            for n in a.scale_pairs.split(',') {
                let pairs: u64 = n.trim().parse().context("--scale-pairs: pair counts")?;
                let r = measure_scale(&a, &etcd, &store, pairs).await?;
                eprintln!(
                    "{pairs} pairs at task size {}: submitted (streamed) in {:.1} s, dispatched at {:.0} pairs/s, fetched in {:.1} s; coordinator peak RSS {:.0} MiB",
                    a.task_size, r.submit_seconds, r.dispatch_rate(), r.fetch_seconds,
                    r.peak_rss_bytes as f64 / 1048576.0
                );
                append_json(
                    a.scale_out.as_deref(),
                    serde_json::json!({
                        "kind": "job", "pairs": pairs, "task_size": a.task_size,
                        "workers": a.dispatch_workers,
                        "coordinator_peak_rss_bytes": r.peak_rss_bytes,
                        "rss_scope": "the coordinator process alone",
                        "dispatch_pairs_per_s": r.dispatch_rate(),
                        "dispatch_seconds": r.dispatch_seconds,
                        "submit_seconds": r.submit_seconds,
                        "fetch_seconds": r.fetch_seconds,
                        "metadata": if etcd.is_empty() { "embedded" } else { "etcd" },
                    }),
                )?;
            }
            return Ok(());
        }
        if a.tls_rounds > 0 {
            return compare_tls(&a, &etcd, &store).await;
        }
        if a.failover_jobs > 0 {
            let f = measure_failover(&a, &etcd, &store).await?;
            eprintln!(
                "failover after {} committed pairs in {} finished jobs (task size {}): {:.2} s from the leader's stop to the first lease of its successor (election TTL {} s; state loaded in {:.2} s)",
                f.committed_pairs, a.failover_jobs, a.failover_task_size, f.seconds, a.election_ttl_s, f.load_seconds
            );
            append_json(
                a.scale_out.as_deref(),
                serde_json::json!({
                    "kind": "failover", "pairs": f.committed_pairs, "jobs": a.failover_jobs,
                    "task_size": a.failover_task_size, "tasks": f.tasks,
                    "failover_seconds": f.seconds, "load_seconds": f.load_seconds,
                    "committed_pairs": f.committed_pairs, "election_ttl_s": a.election_ttl_s,
                    "metadata": if etcd.is_empty() { "embedded" } else { "etcd" },
                }),
            )?;
            return Ok(());
        }
        let plain = BenchSecurity::plaintext();
        let dispatch =
            measure(&a, &etcd, &store, a.dispatch_workers, a.dispatch_pairs, 0.0, &plain).await?;
        append_json(
            a.scale_out.as_deref(),
            serde_json::json!({
                "kind": "job", "pairs": dispatch.pairs, "task_size": a.task_size,
                "workers": dispatch.workers, "dispatch_pairs_per_s": dispatch.rate(),
                "seconds": dispatch.seconds,
                "coordinator_peak_rss_bytes": peak_rss_bytes(),
                "rss_scope": "the bench process: coordinator, simulated workers and client",
                "metadata": if etcd.is_empty() { "embedded" } else { "etcd" },
            }),
        )?;
        let mut scaling = Vec::new();
        for &n in &counts {
            let pairs = (n as f64 * a.seconds * 1000.0 / a.pair_cost_ms) as usize;
            scaling.push(measure(&a, &etcd, &store, n, pairs, a.pair_cost_ms, &plain).await?);
        }
        let base = scaling
            .iter()
            .find(|r| r.workers == 1)
            .map(|r| r.rate())
            .unwrap_or(1000.0 / a.pair_cost_ms);
        let mut rows = vec![vec![
            format!("dispatch ({} workers, 0 ms/pair)", dispatch.workers),
            dispatch.pairs.to_string(),
            format!("{:.2}", dispatch.seconds),
            format!("{:.0}", dispatch.rate()),
            "-".into(),
            "-".into(),
        ]];
        let mut json_rows = Vec::new();
        for r in &scaling {
            let ideal = r.workers as f64 * 1000.0 / a.pair_cost_ms;
            let eff = r.rate() / (r.workers as f64 * base);
            rows.push(vec![
                format!("{} workers, {} ms/pair", r.workers, a.pair_cost_ms),
                r.pairs.to_string(),
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.rate()),
                format!("{:.0}", ideal),
                format!("{:.3}", eff),
            ]);
            json_rows.push(serde_json::json!({
                "workers": r.workers, "pairs": r.pairs, "seconds": r.seconds,
                "pairs_per_second": r.rate(), "ideal": ideal, "efficiency": eff,
            }));
        }
        println!(
            "{}",
            progress::table(
                &[
                    "run",
                    "pairs",
                    "seconds",
                    "pairs/s",
                    "ideal pairs/s",
                    "efficiency"
                ],
                rows
            )
        );
        if let Some(out) = &a.out {
            use std::io::Write;
            let line = serde_json::json!({
                "metadata": meta,
                "task_size": a.task_size,
                "pair_cost_ms": a.pair_cost_ms,
                "dispatch": {"workers": dispatch.workers, "pairs": dispatch.pairs,
                             "seconds": dispatch.seconds, "pairs_per_second": dispatch.rate()},
                "scaling": json_rows,
            });
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)?;
            writeln!(f, "{line}")?;
        }
        Ok(())
    })
}

/// The dispatch run over plaintext and over mTLS, `tls_rounds` times each, alternating so
/// both see the same machine; prints the median rates side by side.
async fn compare_tls(
    a: &DispatchBenchArgs,
    etcd: &[String],
    store: &std::path::Path,
) -> Result<()> {
    let certs = tempfile::tempdir()?;
    let modes = [
        ("plaintext", BenchSecurity::plaintext()),
        ("mTLS", BenchSecurity::mtls(certs.path())?),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..a.tls_rounds {
        for (m, (name, security)) in modes.iter().enumerate() {
            let r = measure(
                a,
                etcd,
                store,
                a.dispatch_workers,
                a.dispatch_pairs,
                0.0,
                security,
            )
            .await?;
            eprintln!("round {}: {name} {:.0} pairs/s", round + 1, r.rate());
            rates[m].push(r.rate());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let plain = median(&mut rates[0]);
    let tls = median(&mut rates[1]);
    let rows = vec![
        vec!["plaintext".into(), format!("{plain:.0}"), "1.000".into()],
        vec![
            "mTLS".into(),
            format!("{tls:.0}"),
            format!("{:.3}", tls / plain),
        ],
    ];
    println!(
        "{}",
        progress::table(&["transport", "median pairs/s", "vs plaintext"], rows)
    );
    append_json(
        a.scale_out.as_deref(),
        serde_json::json!({
            "kind": "tls", "pairs": a.dispatch_pairs, "workers": a.dispatch_workers,
            "task_size": a.task_size, "rounds": a.tls_rounds,
            "plaintext_pairs_per_s": plain, "mtls_pairs_per_s": tls,
            "mtls_vs_plaintext": tls / plain,
            "metadata": if etcd.is_empty() { "embedded" } else { "etcd" },
        }),
    )
}

/// One run: a fresh coordinator, one job, `workers` simulated workers until it is done.
async fn measure(
    a: &DispatchBenchArgs,
    etcd: &[String],
    store: &std::path::Path,
    workers: usize,
    pairs: usize,
    pair_cost_ms: f64,
    security: &BenchSecurity,
) -> Result<RunResult> {
    let mut config = bench_config(etcd, store, None, Duration::from_secs(10))?;
    config.transport = security.coordinator.clone();
    let coordinator = Running::start(config).await?;
    let mut jobs = connect_leader(&coordinator.url, &security.client).await?;
    let corpus_id = upload_corpus(&mut jobs).await?;
    let job = submit(
        &mut jobs,
        &corpus_id,
        pairs,
        a.task_size,
        &format!("bench-{workers}"),
    )
    .await?;
    let seconds = drive(
        &coordinator.url,
        workers,
        pair_cost_ms,
        pairs as u64,
        &security.worker,
    )
    .await?;
    check_finished(&mut jobs, &job.job_id, pairs as u64).await?;
    coordinator.stop().await?;
    Ok(RunResult {
        workers,
        pairs: pairs as u64,
        seconds,
    })
}

struct ScaleRun {
    pairs: u64,
    submit_seconds: f64,
    dispatch_seconds: f64,
    fetch_seconds: f64,
    peak_rss_bytes: u64,
}

impl ScaleRun {
    fn dispatch_rate(&self) -> f64 {
        self.pairs as f64 / self.dispatch_seconds
    }
}

/// One large job against a coordinator in its own process (this binary's `coordinator`
/// command), so that the peak RSS measured is the coordinator's alone: submitted by streaming,
/// labeled by simulated workers, fetched through the client, every label counted.
async fn measure_scale(
    a: &DispatchBenchArgs,
    etcd: &[String],
    store: &std::path::Path,
    pairs: u64,
) -> Result<ScaleRun> {
    let port = labelfleet_cluster::ports::free_loopback_port()?;
    let prefix = format!("/labelfleet-scale-{}-{pairs}", std::process::id());
    let dir = store.join(prefix.trim_start_matches('/'));
    let log = std::fs::File::create(store.join(format!("coordinator-{pairs}.log")))?;
    let mut coordinator = ChildGuard(
        std::process::Command::new(std::env::current_exe()?)
            .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--etcd", &etcd.join(","), "--etcd-prefix", &prefix])
            .args([
                "--store",
                &dir.to_string_lossy(),
                "--task-lease-ms",
                "120000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the coordinator process")?,
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut client =
        labelfleet_client::Client::connect(vec![url.clone()], Duration::from_secs(60)).await?;
    let uploaded = client.upload_corpus("bench", bench_documents()).await?;
    let spec = JobSpec {
        name: format!("scale-{pairs}"),
        corpus_id: uploaded.corpus_id,
        student: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath("stand-in".into())),
        }),
        task_size: a.task_size,
        ..Default::default()
    };
    let started = Instant::now();
    let job = client
        .submit_pairs(spec, "", (0..pairs as usize).map(bench_pair))
        .await?;
    let submit_seconds = started.elapsed().as_secs_f64();
    let dispatch_seconds =
        drive(&url, a.dispatch_workers, 0.0, pairs, &Transport::Plaintext).await?;
    check_finished(client.jobs(), &job.job_id, pairs).await?;
    let started = Instant::now();
    let fetched = client.fetch(&job.job_id, "labels", |_| Ok(())).await?;
    let fetch_seconds = started.elapsed().as_secs_f64();
    if fetched != pairs {
        bail!("fetched {fetched} labels of {pairs}");
    }
    let peak_rss_bytes =
        peak_rss_of(coordinator.0.id()).context("reading the coordinator's VmHWM")?;
    coordinator.kill();
    Ok(ScaleRun {
        pairs,
        submit_seconds,
        dispatch_seconds,
        fetch_seconds,
        peak_rss_bytes,
    })
}

/// Kills the child process when dropped.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Failover {
    committed_pairs: u64,
    tasks: u64,
    seconds: f64,
    load_seconds: f64,
}

/// Finished jobs, then the leader stops without resigning (as after kill -9: its election key
/// lives until the TTL runs out) with one job still queued; a successor on the same etcd prefix
/// and store is started at once. Measured: from the stop to the first lease it grants.
async fn measure_failover(
    a: &DispatchBenchArgs,
    etcd: &[String],
    store: &std::path::Path,
) -> Result<Failover> {
    if etcd.is_empty() {
        bail!("--failover-jobs needs --etcd: the embedded store lives and dies with its process");
    }
    let ttl = Duration::from_secs(a.election_ttl_s);
    let prefix = format!("/labelfleet-failover-{}", std::process::id());
    let first = Running::start(bench_config(etcd, store, Some(&prefix), ttl)?).await?;
    let mut jobs = connect_leader(&first.url, &Transport::Plaintext).await?;
    let corpus_id = upload_corpus(&mut jobs).await?;
    let mut committed = 0;
    // streamed: a history of ten million pairs is over any one message's limit
    let mut client =
        labelfleet_client::Client::connect(vec![first.url.clone()], Duration::from_secs(60))
            .await?;
    for k in 0..a.failover_jobs {
        let spec = JobSpec {
            name: format!("history-{k}"),
            corpus_id: corpus_id.clone(),
            student: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath("stand-in".into())),
            }),
            task_size: a.failover_task_size,
            ..Default::default()
        };
        let job = client
            .submit_pairs(spec, "", (0..a.failover_pairs).map(bench_pair))
            .await?;
        let seconds = drive(
            &first.url,
            a.dispatch_workers,
            0.0,
            a.failover_pairs as u64,
            &Transport::Plaintext,
        )
        .await?;
        check_finished(&mut jobs, &job.job_id, a.failover_pairs as u64).await?;
        committed += a.failover_pairs as u64;
        eprintln!("job {k}: {} pairs in {seconds:.1} s", a.failover_pairs);
    }
    submit(&mut jobs, &corpus_id, 10, 10, "queued").await?;
    first.stop().await?;
    let stopped = Instant::now();
    let second = Running::start(bench_config(etcd, store, Some(&prefix), ttl)?).await?;
    let mut tasks = loop {
        match TaskServiceClient::connect(second.url.clone()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let lease = loop {
        let r = tasks
            .lease_tasks(LeaseTasksRequest {
                worker_id: "failover-probe".into(),
                max_tasks: 1,
                kinds: vec![],
            })
            .await;
        match r {
            Ok(r) if !r.get_ref().tasks.is_empty() => break r.into_inner(),
            Ok(_) => bail!("the new leader had no queued task to lease"),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => bail!("lease from the new leader: {s}"),
        }
    };
    let seconds = stopped.elapsed().as_secs_f64();
    let load_seconds = second.coordinator_load_seconds().unwrap_or(f64::NAN);
    drop(lease);
    second.stop().await?;
    Ok(Failover {
        committed_pairs: committed,
        tasks: committed / a.failover_task_size.max(1) as u64,
        seconds,
        load_seconds,
    })
}

fn bench_config(
    etcd: &[String],
    store: &std::path::Path,
    prefix: Option<&str>,
    election_ttl: Duration,
) -> Result<CoordinatorConfig> {
    let port = labelfleet_cluster::ports::free_loopback_port()?;
    let prefix = prefix.map_or_else(|| format!("/labelfleet-bench-{port}"), String::from);
    let dir = store.join(prefix.trim_start_matches('/'));
    Ok(CoordinatorConfig {
        listen: format!("127.0.0.1:{port}").parse()?,
        etcd: etcd.to_vec(),
        etcd_prefix: prefix,
        store: dir.to_string_lossy().into_owned(),
        task_lease: Duration::from_secs(120),
        election_ttl,
        ..Default::default()
    })
}

/// A coordinator running in this process.
struct Running {
    url: String,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<labelfleet_coordinator::Result<()>>,
    started: Instant,
}

impl Running {
    async fn start(config: CoordinatorConfig) -> Result<Self> {
        let url = format!("http://{}", config.listen);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(labelfleet_coordinator::server::run(config, async {
            let _ = stop_rx.await;
        }));
        Ok(Running {
            url,
            stop_tx,
            server,
            started: Instant::now(),
        })
    }

    /// Seconds the leader took to load state (from the process-wide last-load gauge).
    fn coordinator_load_seconds(&self) -> Option<f64> {
        let _ = self.started;
        labelfleet_coordinator::service::last_load_seconds()
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop_tx.send(());
        self.server.await??;
        Ok(())
    }
}

fn bench_documents() -> Vec<Document> {
    (0..1000)
        .map(|i| Document {
            id: format!("d{i}"),
            title: format!("document {i}"),
            body: "wing flutter at transonic speeds".into(),
            ..Default::default()
        })
        .collect()
}

fn bench_pair(i: usize) -> PairInput {
    PairInput {
        pair_id: format!("p{i}"),
        query_id: format!("q{}", i / 10),
        query: "flutter".into(),
        document: Some(pair_input::Document::DocId(format!("d{}", i % 1000))),
    }
}

async fn upload_corpus(jobs: &mut labelfleet_client::Jobs) -> Result<String> {
    let docs = bench_documents();
    let corpus = jobs
        .upload_corpus(tokio_stream::iter(vec![CorpusChunk {
            corpus_name: "bench".into(),
            documents: docs,
        }]))
        .await?
        .into_inner();
    Ok(corpus.corpus_id)
}

async fn submit(
    jobs: &mut labelfleet_client::Jobs,
    corpus_id: &str,
    pairs: usize,
    task_size: u32,
    name: &str,
) -> Result<Job> {
    let spec = JobSpec {
        name: name.into(),
        corpus_id: corpus_id.into(),
        student: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath("stand-in".into())),
        }),
        label_pairs: (0..pairs).map(bench_pair).collect(),
        task_size,
        ..Default::default()
    };
    Ok(jobs
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner())
}

/// Runs `workers` simulated workers until `pairs` pairs are committed; returns the seconds.
async fn drive(
    url: &str,
    workers: usize,
    pair_cost_ms: f64,
    pairs: u64,
    transport: &Transport,
) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let pb = progress::bar(pairs, &format!("{workers}w"));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (url, done) = (url.to_string(), done.clone());
        handles.push(tokio::spawn(simulated_worker(
            url,
            transport.clone(),
            format!("sim-{w}"),
            pair_cost_ms,
            done,
            pairs,
        )));
    }
    while done.load(Ordering::Relaxed) < pairs {
        pb.set_position(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    for h in handles {
        h.await??;
    }
    Ok(seconds)
}

async fn check_finished(
    jobs: &mut labelfleet_client::Jobs,
    job_id: &str,
    pairs: u64,
) -> Result<()> {
    let job = jobs
        .get_job(GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    let stage = job.stages.first().cloned().unwrap_or_default();
    if job.state != JobState::Succeeded as i32 || stage.done != pairs {
        bail!(
            "bench job ended {:?} with {} of {pairs} pairs",
            job.state,
            stage.done
        );
    }
    Ok(())
}

fn append_json(out: Option<&std::path::Path>, line: serde_json::Value) -> Result<()> {
    use std::io::Write;
    let Some(out) = out else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("{}", out.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// The peak resident set of this process (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    peak_rss_of(std::process::id())
}

/// The peak resident set of a process (VmHWM), in bytes.
fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn connect_leader(url: &str, transport: &Transport) -> Result<labelfleet_client::Jobs> {
    let credentials = labelfleet_client::Credentials {
        transport: transport.clone(),
        token: None,
    };
    let mut client = labelfleet_client::Client::connect_with(
        vec![url.to_string()],
        Duration::from_secs(10),
        credentials,
    )
    .await
    .with_context(|| format!("coordinator at {url} did not become leader"))?;
    Ok(client.jobs().clone())
}

/// A worker whose engine is a fixed cost per pair; it commits one label per pair. Like the
/// real worker, it sends a task's results in the background while it starts on the next one.
async fn simulated_worker(
    url: String,
    transport: Transport,
    id: String,
    pair_cost_ms: f64,
    done: Arc<AtomicU64>,
    total: u64,
) -> Result<()> {
    let channel = transport
        .endpoint(&url, Role::Coordinator)?
        .connect()
        .await?;
    let mut client = TaskServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    client
        .register_worker(RegisterWorkerRequest {
            worker_id: id.clone(),
            capacity: 1,
            device: "stand-in".into(),
            ..Default::default()
        })
        .await?;
    let mut commits: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
    while done.load(Ordering::Relaxed) < total {
        while commits.len() >= 2 {
            if let Some(r) = commits.join_next().await {
                r??;
            }
        }
        let tasks = client
            .lease_tasks(LeaseTasksRequest {
                worker_id: id.clone(),
                max_tasks: 1,
                kinds: vec![],
            })
            .await?
            .into_inner()
            .tasks;
        if tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        for task in tasks {
            if pair_cost_ms > 0.0 {
                let cost = Duration::from_secs_f64(pair_cost_ms * task.pairs.len() as f64 / 1000.0);
                tokio::time::sleep(cost).await;
            }
            let labels: Vec<Label> = task
                .pairs
                .iter()
                .map(|p| Label {
                    pair_id: p.pair_id.clone(),
                    query_id: p.query_id.clone(),
                    grade: 1,
                    expected_grade: 1.0,
                    distribution: vec![0.0, 1.0, 0.0, 0.0],
                    model: "stand-in".into(),
                    ..Default::default()
                })
                .collect();
            let n = labels.len() as u64;
            let (mut client, id, done) = (client.clone(), id.clone(), done.clone());
            commits.spawn(async move {
                let r = client
                    .complete_task(CompleteTaskRequest {
                        worker_id: id,
                        task_id: task.task_id.clone(),
                        attempt: task.attempt,
                        fencing_token: task.fencing_token,
                        lease_token: task.lease_token.clone(),
                        labels,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if r.committed {
                    done.fetch_add(n, Ordering::Relaxed);
                }
                Ok(())
            });
        }
    }
    while let Some(r) = commits.join_next().await {
        r??;
    }
    Ok(())
}
