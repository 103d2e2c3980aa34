//! What the leader keeps durable about a job, and how a new leader gets it back.
//!
//! - The **job record** (etcd, `<prefix>/jobs/<job>/record`) holds the job's state, its task
//!   plan (tasks, task size, items) and, once final, its counts. It is small and one per job.
//! - A task's **result object** (`jobs/<job>/results/<task>.pb`, created once) is its commit
//!   point; no per-task mark is written to etcd.
//! - A task that failed for good has a **failure mark** (`<prefix>/failed/<job>/<task>`).
//!
//! A new leader pages through the records, then, for running jobs only, lists their result
//! objects and failure marks. A finished job costs one record and no listing, so recovery
//! time grows with the work in flight, not with history. An object that cannot be decoded fails
//! its own job, never the load.

use crate::error::Result;
use crate::jobs;
use crate::scheduler::{parse_task_id, JobCounts, JobPlan, Resume, Scheduler};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::meta::{keys, MetaStore};
use labelfleet_proto::v1::{Job, JobSpec, JobState, TaskKind};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// The job record kept in the metadata store (the spec and tasks are objects).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    pub state: i32,
    pub error: String,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// The task plan, recorded at submit: a new leader knows every task without reading any.
    #[serde(default)]
    pub tasks: u32,
    #[serde(default)]
    pub task_size: u32,
    #[serde(default)]
    pub items: u64,
    /// Items are seed documents (a synthesis job) rather than pairs.
    #[serde(default)]
    pub synthesis: bool,
    /// Items are (query, shard) searches (a search job) rather than pairs.
    #[serde(default)]
    pub search: bool,
    #[serde(default)]
    pub max_attempts: u32,
    /// Final counts, once the job ended.
    #[serde(default)]
    pub tasks_done: u64,
    #[serde(default)]
    pub tasks_failed: u64,
    #[serde(default)]
    pub items_done: u64,
    #[serde(default)]
    pub items_failed: u64,
    /// A corpus job (the whole method): no tasks of its own; the stage it is in, and, once it
    /// succeeded, its student checkpoint and outputs.
    #[serde(default)]
    pub corpus: bool,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub checkpoint_id: String,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

impl JobRecord {
    /// What the job's tasks are.
    pub fn task_kind(&self) -> TaskKind {
        match (self.synthesis, self.search) {
            (true, _) => TaskKind::SynthesizeQueries,
            (_, true) => TaskKind::Search,
            _ => TaskKind::Grade,
        }
    }

    /// Records what the job's tasks are.
    pub fn set_task_kind(&mut self, kind: TaskKind) {
        self.synthesis = kind == TaskKind::SynthesizeQueries;
        self.search = kind == TaskKind::Search;
    }

    pub fn plan(&self) -> JobPlan {
        JobPlan {
            tasks: self.tasks,
            task_size: self.task_size.max(1),
            items: self.items,
        }
    }

    pub fn counts(&self) -> JobCounts {
        JobCounts {
            tasks: self.tasks as u64,
            tasks_done: self.tasks_done,
            tasks_failed: self.tasks_failed,
            items: self.items,
            items_done: self.items_done,
            items_failed: self.items_failed,
        }
    }

    fn is_final(&self) -> bool {
        self.state >= JobState::Succeeded as i32
    }
}

/// How a load went, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub jobs: usize,
    pub running: usize,
    /// Jobs failed because an object of theirs could not be read back.
    pub failed_to_load: usize,
}

/// A job the load could not restore, with the reason: its record is rewritten as failed.
pub struct Broken {
    pub job_id: String,
    pub reason: String,
}

/// What a load read back besides the scheduler's jobs.
#[derive(Default)]
pub struct Loaded {
    pub report: LoadReport,
    /// Jobs that could not be restored: their records are rewritten as failed.
    pub broken: Vec<Broken>,
    /// Corpus jobs (they have no tasks; their drivers restart), as a job view each.
    pub corpus: Vec<(JobRecord, Job)>,
}

/// Reads every job back: labeling and synthesis jobs into `sched`, corpus jobs aside.
pub async fn load_jobs(meta: &MetaStore, blobs: &Blobs, sched: &mut Scheduler) -> Result<Loaded> {
    let prefix = meta.prefix().to_string();
    let mut report = LoadReport::default();
    let mut broken = Vec::new();
    let mut corpus = Vec::new();
    let now = Instant::now();
    for (key, value) in meta.list(&keys::jobs(&prefix)).await? {
        if !key.ends_with("/record") {
            continue;
        }
        report.jobs += 1;
        let rec: JobRecord = match serde_json::from_slice(&value) {
            Ok(r) => r,
            Err(e) => {
                let job_id = key
                    .trim_end_matches("/record")
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                tracing::error!(%key, error = %e, "job record undecodable; the job fails");
                report.failed_to_load += 1;
                broken.push(Broken {
                    job_id,
                    reason: format!("record `{key}` undecodable: {e}"),
                });
                continue;
            }
        };
        let spec = match read_spec(blobs, &rec.job_id).await {
            Ok(spec) => spec,
            Err(reason) if !rec.is_final() => {
                tracing::error!(job = %rec.job_id, %reason, "job spec unreadable; the job fails");
                report.failed_to_load += 1;
                broken.push(Broken {
                    job_id: rec.job_id.clone(),
                    reason,
                });
                continue;
            }
            // A finished job's spec is for display only.
            Err(_) => JobSpec::default(),
        };
        let job = Job {
            job_id: rec.job_id.clone(),
            spec: Some(spec),
            state: rec.state,
            error: rec.error.clone(),
            created_unix_ms: rec.created_unix_ms,
            updated_unix_ms: rec.updated_unix_ms,
            ..Default::default()
        };
        if rec.corpus {
            if !rec.is_final() {
                report.running += 1;
            }
            corpus.push((rec, job));
            continue;
        }
        let resume = if rec.is_final() {
            Resume::Finished(rec.counts())
        } else {
            report.running += 1;
            Resume::Running {
                done: committed_tasks(blobs, &rec.job_id).await?,
                failed: failed_tasks(meta, &rec.job_id).await?,
            }
        };
        sched.add_job(
            job,
            rec.plan(),
            rec.task_kind(),
            rec.max_attempts,
            resume,
            now,
        );
    }
    Ok(Loaded {
        report,
        broken,
        corpus,
    })
}

/// The job's spec object (pairs stripped), or why it cannot be read.
pub async fn read_spec(blobs: &Blobs, job_id: &str) -> std::result::Result<JobSpec, String> {
    let key = jobs::spec_key(job_id);
    match blobs.get(&key).await {
        Ok(Some(b)) => JobSpec::decode(b)
            .map(|spec| JobSpec {
                label_pairs: Vec::new(),
                ..spec
            })
            .map_err(|e| format!("spec object `{key}` undecodable: {e}")),
        Ok(None) => Err(format!("spec object `{key}` is missing")),
        Err(e) => Err(format!("spec object `{key}`: {e}")),
    }
}

/// Indexes of the tasks whose result object exists: the commit point.
async fn committed_tasks(blobs: &Blobs, job_id: &str) -> Result<HashSet<u32>> {
    Ok(blobs
        .list(&jobs::results_prefix(job_id))
        .await?
        .iter()
        .filter_map(|key| jobs::task_id_of_key(key).and_then(parse_task_id))
        .map(|(_, i)| i)
        .collect())
}

/// Tasks with a failure mark, and their reasons.
async fn failed_tasks(meta: &MetaStore, job_id: &str) -> Result<HashMap<u32, String>> {
    let prefix = keys::failed_of_job(meta.prefix(), job_id);
    Ok(meta
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|(key, value)| {
            let (_, i) = parse_task_id(&key[prefix.len()..])?;
            Some((i, String::from_utf8_lossy(&value).into_owned()))
        })
        .collect())
}

/// Result objects of a job in task order: (task index, key).
pub async fn result_keys(blobs: &Blobs, job_id: &str) -> Result<Vec<(u32, String)>> {
    let mut keys: Vec<(u32, String)> = blobs
        .list(&jobs::results_prefix(job_id))
        .await?
        .into_iter()
        .filter_map(|key| {
            let (_, i) = jobs::task_id_of_key(&key).and_then(parse_task_id)?;
            Some((i, key))
        })
        .collect();
    keys.sort();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_record_without_a_plan_still_decodes() {
        let rec: JobRecord = serde_json::from_str(
            r#"{"job_id":"j","state":2,"error":"","created_unix_ms":1,"updated_unix_ms":2}"#,
        )
        .unwrap();
        assert_eq!(rec.tasks, 0);
        assert_eq!(rec.plan().task_size, 1);
    }
}
