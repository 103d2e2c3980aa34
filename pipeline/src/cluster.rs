//! The pipeline's view of a cluster: the leading coordinator and the trainer through
//! `labelfleet-client`, and the cluster's object store through `Blobs`. The same calls drive
//! the embedded cluster of `labelfleet run` and a real one (`--coordinator`).

use crate::progress;
use crate::{PipelineError, Result};
use labelfleet_client::{Client, TrainerClient};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_corpus::Hit;
use labelfleet_proto::v1::*;
use labelfleet_types::{GradePrompt, Grading, Pair};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for a leading coordinator or the trainer to answer.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Where a cluster is: coordinator replicas (comma-separated), the trainer, the object store.
#[derive(Clone, Debug)]
pub struct ClusterAddress {
    pub coordinators: String,
    pub trainer: String,
    /// A `--store` value: a directory, file://, s3://, gs:// or az://.
    pub store: String,
    /// How to reach the coordinators and the trainer (TLS, a client certificate, a token).
    pub credentials: labelfleet_client::Credentials,
}

/// Who follows a run of the pipeline from outside: the coordinator's driver of a corpus job
/// records the stage and its progress, and can stop the run (the job was cancelled, or this
/// replica stopped leading).
pub trait Observer: Send + Sync {
    /// The pipeline entered `stage`.
    fn stage(&self, stage: &str);
    /// Progress of the stage's child job or training run.
    fn progress(&self, stage: &str, done: u64, total: u64);
    /// The stage submitted (or got back) child job `job_id`.
    fn child_job(&self, stage: &str, job_id: &str);
    /// Why the run must stop now, if it must.
    fn stop(&self) -> Option<String>;
}

/// How often a wait on a child job asks the observer whether to stop.
const STOP_POLL: Duration = Duration::from_millis(300);

/// A connection to a cluster, with its own async runtime (the stages are synchronous).
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    jobs: Client,
    trainer: TrainerClient,
    store: Blobs,
    observer: Option<Arc<dyn Observer>>,
    /// Prefix of the idempotency keys of the child jobs (the corpus job's id): a re-run of
    /// the stages after a leader change gets the same child jobs back instead of new ones.
    key_prefix: Option<String>,
    /// What the API teacher's jobs fetched so far spent, from their results.
    api_spend: ApiSpend,
}

/// What an API teacher's jobs spent, summed from the usage each task's results carry (the
/// workers call the endpoint). Only committed attempts are counted: an attempt that failed,
/// or lost the race to commit, spent too but reported nothing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ApiSpend {
    pub requests: u64,
    pub retries: u64,
    /// Calls that ended in an error after their retries.
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Tasks whose results carried their usage ...
    pub tasks_reported: u64,
    /// ... and result batches that did not (a worker that does not report usage): when this
    /// is not 0 the sums are a lower bound.
    pub batches_without_usage: u64,
}

impl ApiSpend {
    /// Adds one result batch of an API job.
    pub fn add(&mut self, usage: Option<&ApiUsage>) {
        let Some(u) = usage else {
            self.batches_without_usage += 1;
            return;
        };
        self.requests += u.requests;
        self.retries += u.retries;
        self.failures += u.failures;
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.cost_usd += u.cost_usd;
        self.tasks_reported += 1;
    }
}

impl Cluster {
    /// Connects to the leading coordinator and the trainer, and opens the store.
    pub fn connect(at: &ClusterAddress) -> Result<Cluster> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| PipelineError::io("tokio runtime", e))?;
        let (jobs, trainer) = rt.block_on(async {
            let jobs = Client::connect_with(
                labelfleet_client::endpoints(&at.coordinators),
                CONNECT_WAIT,
                at.credentials.clone(),
            )
            .await?;
            let trainer =
                TrainerClient::connect_with(&at.trainer, CONNECT_WAIT, &at.credentials.transport)
                    .await?;
            Ok::<_, PipelineError>((jobs, trainer))
        })?;
        let store = Blobs::open(&at.store)?;
        Ok(Cluster {
            rt,
            jobs,
            trainer,
            store,
            observer: None,
            key_prefix: None,
            api_spend: ApiSpend::default(),
        })
    }

    /// Reports stages and progress to `observer`, and keys every child job and training run
    /// by `key_prefix`, the stage and its content, so that running the stages again (a new
    /// leader's driver) submits nothing twice.
    pub fn observe(&mut self, observer: Arc<dyn Observer>, key_prefix: &str) {
        self.observer = Some(observer);
        self.key_prefix = Some(key_prefix.to_string());
    }

    /// Tells the observer the pipeline entered `stage`; an error if it must stop.
    pub fn stage(&self, stage: &str) -> Result<()> {
        if let Some(o) = &self.observer {
            if let Some(why) = o.stop() {
                return Err(PipelineError::Stopped(why));
            }
            o.stage(stage);
        }
        Ok(())
    }

    /// The idempotency key of a child job of `stage` with this content ("" without a prefix).
    fn key(&self, stage: &str, content: &[u8]) -> String {
        match &self.key_prefix {
            Some(prefix) => {
                let digest = labelfleet_cache::bytes_key(content);
                format!("{prefix}/{stage}/{digest}")
            }
            None => String::new(),
        }
    }

    /// What the API teacher's jobs fetched so far spent.
    pub fn api_spend(&self) -> &ApiSpend {
        &self.api_spend
    }

    /// Runs `f` to completion on the connection's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Writes `data` to object `key` of the cluster's store.
    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        Ok(self.rt.block_on(self.store.put(key, data))?)
    }

    /// Downloads the objects under `prefix` into `dest` (replacing what was there); returns
    /// how many.
    pub fn get_dir(&self, prefix: &str, dest: &Path) -> Result<usize> {
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| PipelineError::io(dest, e))?;
        }
        Ok(self.rt.block_on(self.store.get_dir(prefix, dest))?)
    }

    /// Grades `pairs` with `model` (a decoder with the `prompt` version, or a cross-encoder) as
    /// one labeling job of `task_size`-pair tasks. Grades come back in input order; a failed
    /// task fails the call with its reason.
    pub fn grade(
        &mut self,
        model: model_ref::Source,
        prompt: GradePrompt,
        pairs: &[Pair],
        max_tokens: usize,
        task_size: u32,
        what: &str,
    ) -> Result<Vec<Grading>> {
        let is_api = matches!(model, model_ref::Source::Openai(_));
        let spec = JobSpec {
            name: what.to_string(),
            grade_prompt_version: prompt.version().to_string(),
            student: Some(ModelRef {
                source: Some(model),
            }),
            label_pairs: pairs
                .iter()
                .enumerate()
                .map(|(i, p)| to_pair_input(i, p))
                .collect(),
            task_size,
            max_tokens: max_tokens as u32,
            ..Default::default()
        };
        // the key hashes a canonical form: the spec's documents carry metadata maps, whose
        // encoded order differs from process to process
        let canonical = serde_json::to_vec(&(
            format!(
                "{:?}|{}|{max_tokens}|{task_size}",
                spec.student, spec.grade_prompt_version
            ),
            pairs,
        ))?;
        let key = self.key(what, &canonical);
        let observer = self.observer.clone();
        let jobs = &mut self.jobs;
        let spend = is_api.then_some(&mut self.api_spend);
        self.rt.block_on(async {
            let job = run_job(jobs, spec, &key, what, observer.as_deref()).await?;
            let mut out: Vec<Option<Grading>> = vec![None; pairs.len()];
            let mut bad = None;
            let mut spend = spend;
            jobs.fetch(&job.job_id, "", |batch| {
                if let Some(s) = spend.as_deref_mut() {
                    s.add(batch.api_usage.as_ref());
                }
                for l in batch.labels {
                    match l.pair_id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
                        Some(slot) => *slot = Some(grading_of(l)),
                        None => bad = Some(l.pair_id),
                    }
                }
                Ok(())
            })
            .await?;
            if let Some(id) = bad {
                return Err(PipelineError::job(
                    what,
                    format!("label for unknown pair `{id}`"),
                ));
            }
            out.into_iter()
                .enumerate()
                .map(|(i, g)| {
                    g.ok_or_else(|| PipelineError::job(what, format!("no label for pair #{i}")))
                })
                .collect()
        })
    }

    /// Writes queries for `docs` with `model` (a decoder LM, or an endpoint the workers call)
    /// on the workers: the documents are uploaded as a corpus, and the synthesis job takes
    /// every one of them as a seed.
    pub fn synthesize(
        &mut self,
        model: model_ref::Source,
        docs: Vec<Document>,
        queries_per_document: u32,
        metadata_queries_per_document: u32,
        max_tokens: usize,
        seed: u64,
    ) -> Result<Vec<SyntheticQuery>> {
        let n = docs.len() as u32;
        let observer = self.observer.clone();
        let prefix = self.key_prefix.clone();
        let jobs = &mut self.jobs;
        let mut spend =
            matches!(model, model_ref::Source::Openai(_)).then_some(&mut self.api_spend);
        self.rt.block_on(async {
            let uploaded = jobs.upload_corpus("seeds", docs).await?;
            if let Some(r) = uploaded.rejected.first() {
                return Err(PipelineError::job(
                    "queries",
                    format!(
                        "seed document {} rejected by the coordinator: field `{}`: {}",
                        r.id, r.field, r.message
                    ),
                ));
            }
            let spec = JobSpec {
                name: "queries".into(),
                corpus_id: uploaded.corpus_id,
                seed_documents: n,
                queries_per_document,
                metadata_queries_per_document,
                teacher: Some(ModelRef {
                    source: Some(model),
                }),
                task_size: 8,
                max_tokens: max_tokens as u32,
                seed,
                ..Default::default()
            };
            let key = match &prefix {
                Some(p) => format!("{p}/queries/{}", spec.corpus_id),
                None => String::new(),
            };
            let job = run_job(jobs, spec, &key, "queries", observer.as_deref()).await?;
            let mut queries = vec![];
            jobs.fetch(&job.job_id, "", |batch| {
                if let Some(s) = spend.as_deref_mut() {
                    s.add(batch.api_usage.as_ref());
                }
                queries.extend(batch.queries);
                Ok(())
            })
            .await?;
            Ok(queries)
        })
    }

    /// The BM25 top `depth` documents of each query over corpus `corpus_id` (uploaded to the
    /// cluster), in input order: one search job, run shard by shard on the workers, whose
    /// per-shard rankings are merged here by score.
    pub fn search(
        &mut self,
        corpus_id: &str,
        queries: &[String],
        depth: usize,
        what: &str,
    ) -> Result<Vec<Vec<Hit>>> {
        let spec = JobSpec {
            name: what.to_string(),
            kind: JobKind::Search as i32,
            corpus_id: corpus_id.to_string(),
            label_queries: queries
                .iter()
                .enumerate()
                .map(|(i, text)| QueryInput {
                    query_id: i.to_string(),
                    text: text.clone(),
                })
                .collect(),
            bm25_depth: depth as u32,
            ..Default::default()
        };
        let canonical = serde_json::to_vec(&(corpus_id, depth, queries))?;
        let key = self.key(what, &canonical);
        let observer = self.observer.clone();
        let jobs = &mut self.jobs;
        self.rt.block_on(async {
            let job = run_job(jobs, spec, &key, what, observer.as_deref()).await?;
            let mut per_query: Vec<Vec<QueryHits>> = vec![Vec::new(); queries.len()];
            let mut bad = None;
            jobs.fetch(&job.job_id, "hits", |batch| {
                for h in batch.hits {
                    match h
                        .query_id
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| per_query.get_mut(i))
                    {
                        Some(slot) => slot.push(h),
                        None => bad = Some(h.query_id),
                    }
                }
                Ok(())
            })
            .await?;
            if let Some(id) = bad {
                return Err(PipelineError::job(
                    what,
                    format!("hits for unknown query `{id}`"),
                ));
            }
            Ok(per_query
                .into_iter()
                .map(|shards| merge_shards(shards, depth))
                .collect())
        })
    }

    /// Distils a student on the trainer from a dataset in the object store, and waits until
    /// the checkpoint is registered and pushed to the workers.
    /// With a key prefix, the run's job id is `<prefix>/distill`: the trainer hands back a run
    /// already going for the same job and dataset instead of starting another.
    pub fn distill(&mut self, mut request: DistillRequest) -> Result<TrainingRun> {
        if let Some(prefix) = &self.key_prefix {
            request.job_id = format!("{prefix}/distill");
        }
        let observer = self.observer.clone();
        let trainer = &mut self.trainer;
        self.rt.block_on(async {
            let run = trainer.start_distillation(request).await?;
            let mut bar: Option<crate::progress::Progress> = None;
            let wait = trainer.wait(&run.run_id, |m| {
                let pb = bar.get_or_insert_with(|| progress::bar(m.total_steps as u64, "distill"));
                pb.set_position(m.step as u64 + 1);
                pb.set_message(format!("loss {:.3}", m.loss));
                if let Some(o) = &observer {
                    o.progress("distill", m.step as u64 + 1, m.total_steps as u64);
                }
            });
            let done = tokio::select! {
                done = wait => done,
                why = stopped(observer.as_deref()) => return Err(PipelineError::Stopped(why)),
            };
            if let Some(pb) = bar {
                pb.finish();
            }
            Ok(done?)
        })
    }
}

/// One query's ranking over the whole corpus from its per-shard rankings: every hit by score,
/// best first (a shard's own order kept among equal scores, shards in order), cut to `depth`.
fn merge_shards(mut shards: Vec<QueryHits>, depth: usize) -> Vec<Hit> {
    shards.sort_by_key(|h| h.shard);
    let mut hits: Vec<SearchHit> = shards.into_iter().flat_map(|s| s.hits).collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.into_iter()
        .take(depth)
        .enumerate()
        .map(|(i, h)| Hit {
            id: h.doc_id,
            score: h.score,
            rank: i + 1,
        })
        .collect()
}

/// Resolves when the observer says the run must stop, with why (never without an observer).
async fn stopped(observer: Option<&dyn Observer>) -> String {
    loop {
        if let Some(why) = observer.and_then(|o| o.stop()) {
            return why;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// Submits a job (with idempotency key `key`, "" for none) and follows it with a progress bar
/// until it ends; a job that did not succeed, or lost a task, is an error.
async fn run_job(
    jobs: &mut Client,
    spec: JobSpec,
    key: &str,
    what: &str,
    observer: Option<&dyn Observer>,
) -> Result<Job> {
    let job = jobs.submit(spec, key).await?;
    if let Some(o) = observer {
        o.child_job(what, &job.job_id);
    }
    let mut bar: Option<crate::progress::Progress> = None;
    let watch = jobs.watch(&job.job_id, |job| {
        let stage = job.stages.first().cloned().unwrap_or_default();
        let pb = bar.get_or_insert_with(|| progress::bar(stage.total, what));
        pb.set_position(stage.done + stage.failed);
        if let Some(o) = observer {
            o.progress(what, stage.done + stage.failed, stage.total);
        }
    });
    let last = tokio::select! {
        last = watch => last?,
        why = stopped(observer) => return Err(PipelineError::Stopped(why)),
    };
    if let Some(pb) = bar {
        pb.finish();
    }
    let stage = last.stages.first().cloned().unwrap_or_default();
    if last.state != JobState::Succeeded as i32 || stage.failed > 0 {
        return Err(PipelineError::job(
            what,
            format!(
                "job {} ended {} with {} of {} failed: {}",
                last.job_id,
                JobState::try_from(last.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?"),
                stage.failed,
                stage.total,
                last.error
            ),
        ));
    }
    Ok(last)
}

/// A label job's pair for the engine's pair: the document goes inline.
fn to_pair_input(index: usize, p: &Pair) -> PairInput {
    PairInput {
        pair_id: index.to_string(),
        query_id: String::new(),
        query: p.query.clone(),
        document: Some(pair_input::Document::Inline(Document {
            id: p.id.clone(),
            title: p.title.clone().unwrap_or_default(),
            body: p.body.clone(),
            metadata: p
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        })),
    }
}

/// A corpus document as the coordinator takes it.
pub fn to_proto_document(d: &labelfleet_corpus::Document) -> Document {
    Document {
        id: d.id.clone(),
        title: d.title.clone().unwrap_or_default(),
        body: d.body.clone(),
        author: d.author.clone().unwrap_or_default(),
        path: d.path.clone().unwrap_or_default(),
        modified: d.modified.clone().unwrap_or_default(),
        metadata: d
            .metadata
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
    }
}

/// A document the coordinator stored, as a record of the corpus JSONL the pipeline ingests
/// (the inverse of [`to_proto_document`]: metadata goes back to top-level fields).
pub fn corpus_record(d: &Document) -> serde_json::Value {
    let mut record = serde_json::Map::new();
    for (k, v) in &d.metadata {
        record.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    record.insert("id".into(), d.id.clone().into());
    record.insert("body".into(), d.body.clone().into());
    for (field, value) in [
        ("title", &d.title),
        ("author", &d.author),
        ("path", &d.path),
        ("modified", &d.modified),
    ] {
        if !value.is_empty() {
            record.insert(field.into(), value.clone().into());
        }
    }
    serde_json::Value::Object(record)
}

/// A label's grading, with a committee's judges. The grade is the worker's: a calibrated
/// student's grade is not always its most likely one.
fn grading_of(l: labelfleet_proto::v1::Label) -> Grading {
    let mut g = Grading::from_distribution(l.distribution);
    g.grade = (l.grade as usize).min(g.distribution.len().saturating_sub(1));
    g.judges = l
        .judges
        .into_iter()
        .map(|j| labelfleet_types::grading::JudgeGrading {
            judge: j.judge,
            model: j.model,
            distribution: j.distribution,
        })
        .collect();
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(shard: u32, hits: &[(&str, f32)]) -> QueryHits {
        QueryHits {
            query_id: "0".into(),
            shard,
            hits: hits
                .iter()
                .map(|(d, s)| SearchHit {
                    doc_id: d.to_string(),
                    score: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn shard_rankings_merge_by_score_keeping_each_shards_order_among_ties() {
        let merged = merge_shards(
            vec![
                shard(1, &[("b1", 3.0), ("b2", 1.0)]),
                shard(0, &[("a1", 3.0), ("a2", 2.0), ("a3", 2.0)]),
            ],
            4,
        );
        let got: Vec<(&str, usize)> = merged.iter().map(|h| (h.id.as_str(), h.rank)).collect();
        assert_eq!(got, [("a1", 1), ("b1", 2), ("a2", 3), ("a3", 4)]);
        assert!(merge_shards(vec![], 3).is_empty());
    }
}
