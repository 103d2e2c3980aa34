//! What the coordinator's loopback tests share: a replica over real gRPC on an in-process
//! metadata store and a real object-store directory, a seven-document corpus, and pairs.

#![allow(dead_code)]

use labelfleet_cluster::meta::MetaStore;
use labelfleet_coordinator::server::{run_with_meta, CoordinatorConfig};
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::task_service_client::TaskServiceClient;
use labelfleet_proto::v1::*;
use std::time::Duration;
use tonic::transport::Channel;

pub struct Replica {
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<labelfleet_coordinator::Result<()>>,
}

pub async fn start(meta: &MetaStore, store: &std::path::Path) -> Replica {
    start_with(meta, store, CoordinatorConfig::default()).await
}

pub async fn start_with(
    meta: &MetaStore,
    store: &std::path::Path,
    base: CoordinatorConfig,
) -> Replica {
    let port = labelfleet_cluster::ports::free_loopback_port().expect("a free port");
    let config = CoordinatorConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("address"),
        store: store.to_string_lossy().into_owned(),
        task_lease: Duration::from_secs(60),
        ..base
    };
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(run_with_meta(config, meta.clone(), async {
        let _ = stop_rx.await;
    }));
    Replica {
        url: format!("http://127.0.0.1:{port}"),
        stop,
        handle,
    }
}

impl Replica {
    /// Clients of this replica once it leads.
    pub async fn clients(&self) -> (JobServiceClient<Channel>, TaskServiceClient<Channel>) {
        for _ in 0..200 {
            if let (Ok(mut j), Ok(t)) = (
                JobServiceClient::connect(self.url.clone()).await,
                TaskServiceClient::connect(self.url.clone()).await,
            ) {
                let probe = j.list_jobs(ListJobsRequest::default()).await;
                if probe.is_ok() {
                    return (j, t);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("coordinator at {} never led", self.url);
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        self.clients().await.0
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.expect("join").expect("coordinator");
    }
}

/// Seven documents, `d0`..`d6`.
pub async fn upload_corpus(jobs: &mut JobServiceClient<Channel>) -> UploadCorpusResponse {
    let documents = (0..7)
        .map(|i| Document {
            id: format!("d{i}"),
            body: format!("body of d{i}"),
            ..Default::default()
        })
        .collect();
    jobs.upload_corpus(tokio_stream::iter(vec![CorpusChunk {
        corpus_name: "c".into(),
        documents,
    }]))
    .await
    .expect("upload")
    .into_inner()
}

/// Pair `i`: query `i / 5` on document `i % 7`.
pub fn pair(i: usize) -> PairInput {
    PairInput {
        pair_id: format!("p{i}"),
        query_id: format!("q{}", i / 5),
        query: format!("query {i}"),
        document: Some(pair_input::Document::DocId(format!("d{}", i % 7))),
    }
}

/// A labeling job of pairs `0..pairs` over the corpus, `task_size` pairs per task.
pub fn label_spec(corpus_id: &str, pairs: usize, task_size: u32) -> JobSpec {
    JobSpec {
        corpus_id: corpus_id.into(),
        student: Some(ModelRef {
            source: Some(model_ref::Source::LocalPath("m".into())),
        }),
        label_pairs: (0..pairs).map(pair).collect(),
        task_size,
        ..Default::default()
    }
}
