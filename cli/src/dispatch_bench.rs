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
use labelfleet_cluster::MAX_MESSAGE_BYTES;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::job_service_client::JobServiceClient;
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

        let dispatch =
            measure(&a, &etcd, &store, a.dispatch_workers, a.dispatch_pairs, 0.0).await?;
        let mut scaling = Vec::new();
        for &n in &counts {
            let pairs = (n as f64 * a.seconds * 1000.0 / a.pair_cost_ms) as usize;
            scaling.push(measure(&a, &etcd, &store, n, pairs, a.pair_cost_ms).await?);
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

/// One run: a fresh coordinator, one job, `workers` simulated workers until it is done.
async fn measure(
    a: &DispatchBenchArgs,
    etcd: &[String],
    store: &std::path::Path,
    workers: usize,
    pairs: usize,
    pair_cost_ms: f64,
) -> Result<RunResult> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = CoordinatorConfig {
        listen: format!("127.0.0.1:{port}").parse()?,
        etcd: etcd.to_vec(),
        etcd_prefix: format!("/labelfleet-bench-{port}"),
        store: store.join(format!("run-{port}")),
        task_lease: Duration::from_secs(120),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(labelfleet_coordinator::server::run(config, async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://127.0.0.1:{port}");
    let mut jobs = connect_leader(&url).await?;

    let docs: Vec<Document> = (0..1000)
        .map(|i| Document {
            id: format!("d{i}"),
            title: format!("document {i}"),
            body: "wing flutter at transonic speeds".into(),
            ..Default::default()
        })
        .collect();
    let corpus = jobs
        .upload_corpus(tokio_stream::iter(vec![CorpusChunk {
            corpus_name: "bench".into(),
            documents: docs,
        }]))
        .await?
        .into_inner();
    let spec = JobSpec {
        name: format!("bench-{workers}"),
        corpus_id: corpus.corpus_id,
        student: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath("stand-in".into())),
        }),
        label_pairs: (0..pairs)
            .map(|i| PairInput {
                pair_id: format!("p{i}"),
                query_id: format!("q{}", i / 10),
                query: "flutter".into(),
                document: Some(pair_input::Document::DocId(format!("d{}", i % 1000))),
            })
            .collect(),
        task_size: a.task_size,
        ..Default::default()
    };
    let job = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();

    let done = Arc::new(AtomicU64::new(0));
    let pb = progress::bar(pairs as u64, &format!("{workers}w"));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (url, done) = (url.clone(), done.clone());
        handles.push(tokio::spawn(simulated_worker(
            url,
            format!("sim-{w}"),
            pair_cost_ms,
            done,
            pairs as u64,
        )));
    }
    while done.load(Ordering::Relaxed) < pairs as u64 {
        pb.set_position(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    for h in handles {
        h.await??;
    }
    let final_job = jobs
        .get_job(GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await?
        .into_inner();
    let stage = final_job.stages.first().cloned().unwrap_or_default();
    if final_job.state != JobState::Succeeded as i32 || stage.done != pairs as u64 {
        bail!(
            "bench job ended {:?} with {} of {pairs} pairs",
            final_job.state,
            stage.done
        );
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(RunResult {
        workers,
        pairs: pairs as u64,
        seconds,
    })
}

async fn connect_leader(url: &str) -> Result<JobServiceClient<tonic::transport::Channel>> {
    for _ in 0..200 {
        if let Ok(mut c) = JobServiceClient::connect(url.to_string()).await {
            let c2 = c.clone();
            match c
                .get_job(GetJobRequest {
                    job_id: String::new(),
                })
                .await
            {
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                _ => {
                    return Ok(c2
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES))
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("coordinator at {url} did not become leader")
}

/// A worker whose engine is a fixed cost per pair; it commits one label per pair. Like the
/// real worker, it sends a task's results in the background while it starts on the next one.
async fn simulated_worker(
    url: String,
    id: String,
    pair_cost_ms: f64,
    done: Arc<AtomicU64>,
    total: u64,
) -> Result<()> {
    let mut client = TaskServiceClient::connect(url)
        .await?
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
