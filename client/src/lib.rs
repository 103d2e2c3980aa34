//! The labelfleet cluster client, the one way every caller (the CLI, the pipeline, the
//! benchmarks, the tests) talks to a cluster:
//!
//! - finds the leader among the coordinator replicas (a standby answers UNAVAILABLE) and finds
//!   it again after a leader change;
//! - uploads a corpus in chunks, submits a job, or streams a job's pairs in chunks
//!   (`SubmitJobStream`), so a job of any size is submitted in bounded memory;
//! - watches a job to its end and fetches its results with a resumable cursor, checking that
//!   the count received is the count committed;
//! - over TLS when given the cluster CA, sending a bearer token with every call when given one
//!   ([`Credentials`]).

use futures::StreamExt;
use labelfleet_cluster::security::{Role, Transport};
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::*;
use std::time::{Duration, Instant};
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

/// How a client proves who it is: the transport (TLS with the cluster CA, and a client
/// certificate for an operator) and a bearer token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub transport: Transport,
    pub token: Option<String>,
}

impl Default for Credentials {
    /// Plaintext, no token (the embedded cluster, tests on loopback).
    fn default() -> Self {
        Credentials {
            transport: Transport::Plaintext,
            token: None,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    fn new(token: Option<&str>) -> Result<Bearer> {
        let value = token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    ClientError::Caller(
                        "the bearer token holds characters a header cannot carry".into(),
                    )
                })
            })
            .transpose()?;
        Ok(Bearer(value))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The gRPC client of the leader's `JobService`, with the caller's token on every call.
pub type Jobs = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// Largest message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// How long a replica may take to say whether it leads.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pairs per message of a streamed submit.
pub const PAIRS_PER_CHUNK: usize = 10_000;
/// Documents per message of a corpus upload.
pub const DOCUMENTS_PER_CHUNK: usize = 500;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no leader among {endpoints} after {waited:?}: {last}")]
    NoLeader {
        endpoints: String,
        waited: Duration,
        last: String,
    },
    #[error("{what}: {} ({:?})", status.message(), status.code())]
    Refused { what: String, status: tonic::Status },
    #[error("fetch {job_id}: received {received} results, the job committed {committed}")]
    Short {
        job_id: String,
        received: u64,
        committed: u64,
    },
    #[error("{0}")]
    Caller(String),
    #[error("endpoint `{endpoint}`: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Security(#[from] labelfleet_cluster::security::SecurityError),
}

impl ClientError {
    /// The gRPC code a refusal carried, if it was one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Refused { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

fn refused(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> ClientError {
    let what = what.into();
    move |status| ClientError::Refused { what, status }
}

/// Splits a comma-separated list of coordinator addresses.
pub fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.starts_with("http://") || e.starts_with("https://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

/// A connection to the leading coordinator of a cluster.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    wait: Duration,
    credentials: Credentials,
    jobs: Jobs,
}

impl Client {
    /// Connects over plaintext, without a token, to whichever of `endpoints` leads, waiting up
    /// to `wait` for one to.
    pub async fn connect(endpoints: Vec<String>, wait: Duration) -> Result<Self> {
        Client::connect_with(endpoints, wait, Credentials::default()).await
    }

    /// Connects with `credentials` to whichever of `endpoints` leads.
    pub async fn connect_with(
        endpoints: Vec<String>,
        wait: Duration,
        credentials: Credentials,
    ) -> Result<Self> {
        let jobs = find_leader(&endpoints, wait, &credentials).await?;
        Ok(Client {
            endpoints,
            wait,
            credentials,
            jobs,
        })
    }

    /// The raw gRPC client of the current leader.
    pub fn jobs(&mut self) -> &mut Jobs {
        &mut self.jobs
    }

    /// Finds the leader again (after UNAVAILABLE or a broken stream).
    pub async fn reconnect(&mut self) -> Result<()> {
        self.jobs = find_leader(&self.endpoints, self.wait, &self.credentials).await?;
        Ok(())
    }

    /// Runs `call` against the leader, finding it again while the answer is UNAVAILABLE.
    async fn retrying<T, F, Fut>(&mut self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Jobs) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        loop {
            match call(self.jobs.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && start.elapsed() < self.wait => {
                    tracing::debug!(what, status = %s.message(), "leader unavailable; finding it again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.reconnect().await?;
                }
                Err(s) => return Err(refused(what)(s)),
            }
        }
    }

    /// Uploads documents in chunks; the coordinator names every rejected record.
    pub async fn upload_corpus(
        &mut self,
        name: &str,
        documents: Vec<Document>,
    ) -> Result<UploadCorpusResponse> {
        let chunks: Vec<CorpusChunk> = documents
            .chunks(DOCUMENTS_PER_CHUNK)
            .enumerate()
            .map(|(i, c)| CorpusChunk {
                corpus_name: if i == 0 {
                    name.to_string()
                } else {
                    String::new()
                },
                documents: c.to_vec(),
            })
            .collect();
        self.retrying("upload corpus", |mut c| {
            let chunks = chunks.clone();
            async move { c.upload_corpus(tokio_stream::iter(chunks)).await }
        })
        .await
    }

    /// Submits a job whose spec carries everything (pairs included, for small jobs).
    pub async fn submit(&mut self, spec: JobSpec, idempotency_key: &str) -> Result<Job> {
        let request = SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: idempotency_key.to_string(),
        };
        self.retrying("submit", |mut c| {
            let request = request.clone();
            async move { c.submit_job(request).await }
        })
        .await
    }

    /// Submits a labeling job with its pairs streamed in chunks of [`PAIRS_PER_CHUNK`]: neither
    /// side holds all the pairs. A broken stream is not replayed; submit again with the same
    /// idempotency key.
    pub async fn submit_pairs<I>(
        &mut self,
        spec: JobSpec,
        idempotency_key: &str,
        pairs: I,
    ) -> Result<Job>
    where
        I: Iterator<Item = PairInput> + Send + 'static,
    {
        if !spec.label_pairs.is_empty() {
            return Err(ClientError::Caller(
                "submit_pairs: put the pairs in the iterator, not in spec.label_pairs".into(),
            ));
        }
        let header = SubmitJobChunk {
            request: Some(SubmitJobRequest {
                spec: Some(spec),
                idempotency_key: idempotency_key.to_string(),
            }),
            pairs: Vec::new(),
        };
        let body = PairChunks {
            pairs,
            size: PAIRS_PER_CHUNK,
        };
        let stream = futures::stream::iter(std::iter::once(header).chain(body));
        self.jobs
            .submit_job_stream(stream.boxed())
            .await
            .map(|r| r.into_inner())
            .map_err(refused("submit (streamed)"))
    }

    pub async fn get(&mut self, job_id: &str) -> Result<Job> {
        let request = GetJobRequest {
            job_id: job_id.to_string(),
        };
        self.retrying("get job", |mut c| {
            let request = request.clone();
            async move { c.get_job(request).await }
        })
        .await
    }

    /// Follows a job until it ends, through leader changes; `on_update` sees every snapshot.
    pub async fn watch(&mut self, job_id: &str, mut on_update: impl FnMut(&Job)) -> Result<Job> {
        loop {
            let request = WatchJobRequest {
                job_id: job_id.to_string(),
            };
            let mut stream = self
                .retrying("watch", |mut c| {
                    let request = request.clone();
                    async move { c.watch_job(request).await }
                })
                .await?;
            // Until the stream ends or breaks (a leader change): then find the leader again.
            while let Ok(Some(job)) = stream.message().await {
                on_update(&job);
                if job.state >= JobState::Succeeded as i32 {
                    return Ok(job);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.reconnect().await?;
        }
    }

    /// Reads output `name` of a corpus job (`Job.artifacts`) whole, finding the leader again
    /// if the stream breaks (the read starts over).
    pub async fn fetch_artifact(&mut self, job_id: &str, name: &str) -> Result<Vec<u8>> {
        let request = FetchArtifactRequest {
            job_id: job_id.to_string(),
            name: name.to_string(),
        };
        for _ in 0..20 {
            let mut stream = self
                .retrying("fetch artifact", |mut c| {
                    let request = request.clone();
                    async move { c.fetch_artifact(request).await }
                })
                .await?;
            let mut data = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => data.extend_from_slice(&chunk.data),
                    Ok(None) => return Ok(data),
                    Err(s) if s.code() == Code::Unavailable => break,
                    Err(s) => return Err(refused("fetch artifact")(s)),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.reconnect().await?;
        }
        Err(refused("fetch artifact")(tonic::Status::unavailable(
            "the stream broke 20 times",
        )))
    }

    /// Reads a job's results in order, resuming from the count received after a broken
    /// stream, and hands each batch to `on_batch`. For a job that has ended, checks that the
    /// count received is the count it committed. Returns the count.
    pub async fn fetch(
        &mut self,
        job_id: &str,
        stage: &str,
        mut on_batch: impl FnMut(ResultBatch) -> Result<()>,
    ) -> Result<u64> {
        let job = self.get(job_id).await?;
        let mut received = 0u64;
        'attempts: for _ in 0..20 {
            let request = FetchResultsRequest {
                job_id: job_id.to_string(),
                stage: stage.to_string(),
                offset: received,
            };
            let mut stream = self
                .retrying("fetch", |mut c| {
                    let request = request.clone();
                    async move { c.fetch_results(request).await }
                })
                .await?;
            loop {
                match stream.message().await {
                    Ok(Some(batch)) => {
                        received +=
                            (batch.labels.len() + batch.queries.len() + batch.hits.len()) as u64;
                        on_batch(batch)?;
                    }
                    Ok(None) => break 'attempts,
                    Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                        self.reconnect().await?;
                        continue 'attempts;
                    }
                    Err(s) => return Err(refused(format!("fetch {job_id}"))(s)),
                }
            }
        }
        let committed = committed_results(&job);
        if job.state >= JobState::Succeeded as i32 && received < committed {
            return Err(ClientError::Short {
                job_id: job_id.to_string(),
                received,
                committed,
            });
        }
        Ok(received)
    }
}

/// Results a job's progress says are committed: labels for a labeling job; for a synthesis
/// job the count is of documents, not queries, so nothing can be checked (0).
/// Results a labeling job committed (one label per pair done); synthesis and search jobs count
/// documents and shard searches, not results, so nothing is checked for them.
fn committed_results(job: &Job) -> u64 {
    job.stages
        .first()
        .filter(|s| s.stage == "label")
        .map_or(0, |s| s.done)
}

/// Pairs grouped into submit messages.
struct PairChunks<I> {
    pairs: I,
    size: usize,
}

impl<I: Iterator<Item = PairInput>> Iterator for PairChunks<I> {
    type Item = SubmitJobChunk;
    fn next(&mut self) -> Option<SubmitJobChunk> {
        let pairs: Vec<PairInput> = self.pairs.by_ref().take(self.size).collect();
        (!pairs.is_empty()).then_some(SubmitJobChunk {
            request: None,
            pairs,
        })
    }
}

/// The first replica that answers as leader; a standby answers UNAVAILABLE.
async fn find_leader(
    endpoints: &[String],
    wait: Duration,
    credentials: &Credentials,
) -> Result<Jobs> {
    let start = Instant::now();
    let mut last = String::from("no endpoint given");
    let bearer = Bearer::new(credentials.token.as_deref())?;
    loop {
        for url in endpoints {
            let endpoint = credentials.transport.endpoint(url, Role::Coordinator)?;
            let channel = match endpoint
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let mut client = JobServiceClient::with_interceptor(channel, bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            // The leader answers (NOT_FOUND for the empty id, or a refusal of the caller's
            // credentials, which the call that follows reports); a standby UNAVAILABLE.
            let probe = client.get_job(GetJobRequest {
                job_id: String::new(),
            });
            // A frozen replica (SIGSTOP, a hung node) accepts connections and never answers.
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Err(_) => last = format!("{url}: no answer in {PROBE_TIMEOUT:?}"),
                Ok(Err(s)) if s.code() == Code::Unavailable => {
                    last = format!("{url}: {}", s.message())
                }
                Ok(_) => return Ok(client),
            }
        }
        if start.elapsed() >= wait {
            return Err(ClientError::NoLeader {
                endpoints: endpoints.join(","),
                waited: wait,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to a cluster's trainer: starts a distillation and follows it until the
/// checkpoint is registered and pushed to the workers.
#[derive(Clone)]
pub struct TrainerClient {
    trainer: labelfleet_proto::v1::trainer_service_client::TrainerServiceClient<Channel>,
}

impl TrainerClient {
    /// Connects over plaintext to the trainer at `url` (`host:port` or a URL), waiting up to
    /// `wait` for it to listen.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self> {
        TrainerClient::connect_with(url, wait, &Transport::Plaintext).await
    }

    /// Connects to the trainer over `transport` (over TLS the caller's certificate must be a
    /// coordinator's or an operator's).
    pub async fn connect_with(url: &str, wait: Duration, transport: &Transport) -> Result<Self> {
        let url = endpoints(url).into_iter().next().unwrap_or_default();
        let endpoint = transport.endpoint(&url, Role::Trainer)?;
        let start = Instant::now();
        loop {
            match endpoint.connect().await {
                Ok(channel) => {
                    let trainer =
                        labelfleet_proto::v1::trainer_service_client::TrainerServiceClient::new(
                            channel,
                        )
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES);
                    return Ok(TrainerClient { trainer });
                }
                Err(e) if start.elapsed() >= wait => {
                    return Err(ClientError::Endpoint {
                        endpoint: url,
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// Starts a distillation run.
    pub async fn start_distillation(&mut self, request: DistillRequest) -> Result<TrainingRun> {
        self.trainer
            .start_distillation(request)
            .await
            .map(|r| r.into_inner())
            .map_err(refused("start distillation"))
    }

    pub async fn get_run(&mut self, run_id: &str) -> Result<TrainingRun> {
        self.trainer
            .get_training_run(GetTrainingRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(refused("training run"))
    }

    /// Follows a run's metrics (`on_step` sees each) and then waits until it is done (the
    /// checkpoint registered and pushed) or failed.
    pub async fn wait(
        &mut self,
        run_id: &str,
        mut on_step: impl FnMut(&TrainingMetrics),
    ) -> Result<TrainingRun> {
        if let Ok(stream) = self
            .trainer
            .watch_training(GetTrainingRunRequest {
                run_id: run_id.to_string(),
            })
            .await
        {
            let mut stream = stream.into_inner();
            while let Ok(Some(m)) = stream.message().await {
                on_step(&m);
            }
        }
        loop {
            let run = self.get_run(run_id).await?;
            match run.state.as_str() {
                "done" => return Ok(run),
                "failed" => {
                    return Err(ClientError::Caller(format!(
                        "distillation run {} failed: {}",
                        run.run_id, run.error
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_blanks_are_dropped() {
        assert_eq!(
            endpoints("c1:7070, http://c2:7070,,https://c3"),
            vec!["http://c1:7070", "http://c2:7070", "https://c3"]
        );
    }

    #[test]
    fn pairs_are_chunked_without_holding_them_all() {
        let pairs = (0..25).map(|i| PairInput {
            pair_id: format!("p{i}"),
            ..Default::default()
        });
        let sizes: Vec<usize> = PairChunks { pairs, size: 10 }
            .map(|c| c.pairs.len())
            .collect();
        assert_eq!(sizes, vec![10, 10, 5]);
    }

    #[tokio::test]
    async fn no_leader_is_a_typed_error_naming_the_endpoints() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let err = Client::connect(
            vec![format!("http://127.0.0.1:{port}")],
            Duration::from_millis(300),
        )
        .await
        .err()
        .expect("nothing listens there");
        assert!(matches!(err, ClientError::NoLeader { .. }), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
