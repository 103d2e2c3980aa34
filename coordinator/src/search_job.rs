//! Search jobs: BM25 retrieval over an uploaded corpus, run shard by shard on the workers.
//!
//! A search job names a corpus and a set of queries. The coordinator cuts one task per (corpus
//! shard, batch of queries); a worker searches its shard's tantivy index, which the first
//! worker that needs it builds from the shard object and keeps in the object store
//! (see `labelfleet_cluster::layout`, created once). Each result is the top `bm25_depth`
//! hits of one query on one shard; the caller merges the shards of a query by score (a
//! scatter-gather, as a search engine's query-then-fetch: each shard scores with its own
//! statistics). The corpus job's negatives, targets and evaluation pool come from here, so the
//! leader never holds an index or the corpus to mine negatives.

use crate::error::{CoordinatorError, Result};
use crate::scheduler::{task_id, JobPlan, MAX_ATTEMPTS_LIMIT};
use labelfleet_proto::v1::{JobKind, JobSpec, QueryInput, Task, TaskKind};
use std::collections::HashSet;

/// Queries per search task when the spec's `task_size` is 0.
pub const DEFAULT_QUERIES_PER_TASK: usize = 256;
/// The deepest ranking a search job returns per query and shard.
pub const MAX_DEPTH: u32 = 1_000;
/// The depth when the spec's `bm25_depth` is 0.
pub const DEFAULT_DEPTH: u32 = 100;
/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 4_096;

/// A job that searches a corpus with BM25.
pub fn is_search(spec: &JobSpec) -> bool {
    spec.kind == JobKind::Search as i32
}

/// Checks a search spec; errors name the field and, for a query, the record.
pub fn validate(spec: &JobSpec) -> Result<()> {
    let invalid = |m: String| Err(CoordinatorError::Invalid(m));
    if spec.corpus_id.is_empty() {
        return invalid("spec.corpus_id: a search job searches an uploaded corpus".into());
    }
    if spec.bm25_depth > MAX_DEPTH {
        return invalid(format!(
            "spec.bm25_depth: {} is over the limit of {MAX_DEPTH}",
            spec.bm25_depth
        ));
    }
    if spec.max_task_attempts > MAX_ATTEMPTS_LIMIT {
        return invalid(format!(
            "spec.max_task_attempts: {} is over the limit of {MAX_ATTEMPTS_LIMIT}",
            spec.max_task_attempts
        ));
    }
    if spec.task_size as usize > 10 * DEFAULT_QUERIES_PER_TASK {
        return invalid(format!(
            "spec.task_size: {} queries per task is over the limit of {}",
            spec.task_size,
            10 * DEFAULT_QUERIES_PER_TASK
        ));
    }
    let unused = unused_fields(spec);
    if !unused.is_empty() {
        return invalid(format!(
            "spec.{}: a search job takes corpus_id, label_queries, bm25_depth, task_size and \
             max_task_attempts only",
            unused.join(", spec.")
        ));
    }
    check_queries(&spec.label_queries)
}

fn unused_fields(spec: &JobSpec) -> Vec<&'static str> {
    let set = [
        ("label_pairs", !spec.label_pairs.is_empty()),
        ("seed_documents", spec.seed_documents != 0),
        ("queries_per_document", spec.queries_per_document != 0),
        (
            "metadata_queries_per_document",
            spec.metadata_queries_per_document != 0,
        ),
        ("teacher", spec.teacher.is_some()),
        ("student", spec.student.is_some()),
        ("negatives_per_query", spec.negatives_per_query != 0),
        ("rank_sampling", spec.rank_sampling != 0),
        ("human_judgments", !spec.human_judgments.is_empty()),
        ("committee", spec.committee.is_some()),
        ("label_queries_sample", spec.label_queries_sample != 0),
        (
            "label_candidates_per_query",
            spec.label_candidates_per_query != 0,
        ),
        ("epochs", spec.epochs != 0),
        ("learning_rate", spec.learning_rate != 0.0),
        ("heldout_fraction", spec.heldout_fraction != 0.0),
        ("consistency_depth", spec.consistency_depth != 0),
        ("grade_labels", !spec.grade_labels.is_empty()),
        (
            "grade_prompt_version",
            !spec.grade_prompt_version.is_empty(),
        ),
        (
            "query_prompt_version",
            !spec.query_prompt_version.is_empty(),
        ),
    ];
    set.iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect()
}

fn check_queries(queries: &[QueryInput]) -> Result<()> {
    if queries.is_empty() {
        return Err(CoordinatorError::Invalid(
            "spec.label_queries: no queries to search".into(),
        ));
    }
    let mut seen = HashSet::new();
    for (i, q) in queries.iter().enumerate() {
        let problem = if q.query_id.is_empty() {
            Some("query_id: empty")
        } else if !seen.insert(q.query_id.as_str()) {
            Some("query_id: duplicate")
        } else if q.text.trim().is_empty() {
            Some("text: empty")
        } else if q.text.len() > MAX_QUERY_BYTES {
            Some("text: longer than 4096 bytes")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(CoordinatorError::Invalid(format!(
                "spec.label_queries[{i}] (query `{}`).{problem}",
                q.query_id
            )));
        }
    }
    Ok(())
}

/// One task per (shard, batch of queries), shard by shard. Every task is one item of the plan,
/// so the job's progress counts shard searches.
pub fn plan_tasks(job_id: &str, spec: &JobSpec, shards: u32) -> (Vec<Task>, JobPlan) {
    let per_task = match spec.task_size as usize {
        0 => DEFAULT_QUERIES_PER_TASK,
        n => n,
    };
    let depth = match spec.bm25_depth {
        0 => DEFAULT_DEPTH,
        d => d,
    };
    let mut tasks = Vec::new();
    for shard in 0..shards {
        for batch in spec.label_queries.chunks(per_task) {
            tasks.push(Task {
                task_id: task_id(job_id, tasks.len() as u32),
                job_id: job_id.to_string(),
                kind: TaskKind::Search as i32,
                corpus_id: spec.corpus_id.clone(),
                shard,
                queries: batch.to_vec(),
                depth,
                ..Default::default()
            });
        }
    }
    let plan = JobPlan::new(tasks.len() as u64, 1);
    (tasks, plan)
}

/// A search task's results must answer each of its queries once, with at most `depth` hits.
pub fn check_hits(task: &Task, hits: &[labelfleet_proto::v1::QueryHits]) -> Result<()> {
    let asked: HashSet<&str> = task.queries.iter().map(|q| q.query_id.as_str()).collect();
    let mut answered = HashSet::new();
    for h in hits {
        if !asked.contains(h.query_id.as_str()) || !answered.insert(h.query_id.as_str()) {
            return Err(CoordinatorError::Invalid(format!(
                "task `{}`: hits for query `{}`, not one of the task's, or twice",
                task.task_id, h.query_id
            )));
        }
        if h.shard != task.shard || h.hits.len() > task.depth as usize {
            return Err(CoordinatorError::Invalid(format!(
                "task `{}`: query `{}` has {} hits on shard {} (the task searches shard {} to depth {})",
                task.task_id,
                h.query_id,
                h.hits.len(),
                h.shard,
                task.shard,
                task.depth
            )));
        }
    }
    if answered.len() != asked.len() {
        return Err(CoordinatorError::Invalid(format!(
            "task `{}`: hits for {} of its {} queries",
            task.task_id,
            answered.len(),
            asked.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::{ModelRef, QueryHits, SearchHit};

    fn spec(queries: usize) -> JobSpec {
        JobSpec {
            kind: JobKind::Search as i32,
            corpus_id: "c1".into(),
            label_queries: (0..queries)
                .map(|i| QueryInput {
                    query_id: format!("q{i}"),
                    text: format!("query {i}"),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_are_cut_per_shard_and_batch_and_counted_as_items() {
        let spec = JobSpec {
            task_size: 2,
            bm25_depth: 7,
            ..spec(5)
        };
        let (tasks, plan) = plan_tasks("j", &spec, 2);
        // 3 batches (2, 2, 1) on each of 2 shards
        assert_eq!(tasks.len(), 6);
        assert_eq!((plan.tasks, plan.items), (6, 6));
        assert_eq!(plan.items_in(5), 1);
        assert_eq!(
            tasks.iter().map(|t| t.shard).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1]
        );
        assert_eq!(tasks[2].queries.len(), 1);
        assert!(tasks.iter().all(|t| t.depth == 7 && t.corpus_id == "c1"));
        let default = plan_tasks("j", &self::spec(3), 1).0;
        assert_eq!(default[0].depth, DEFAULT_DEPTH);
    }

    #[test]
    fn bad_queries_and_foreign_fields_are_named() {
        let mut s = spec(2);
        s.label_queries[1].query_id = "q0".into();
        let err = validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("spec.label_queries[1] (query `q0`).query_id: duplicate"),
            "{err}"
        );
        let mut s = spec(2);
        s.label_queries[0].text = "  ".into();
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("[0] (query `q0`).text: empty"));
        let s = JobSpec {
            teacher: Some(ModelRef::default()),
            negatives_per_query: 3,
            ..spec(1)
        };
        let err = validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("spec.teacher, spec.negatives_per_query"),
            "{err}"
        );
        let s = JobSpec {
            bm25_depth: MAX_DEPTH + 1,
            ..spec(1)
        };
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("spec.bm25_depth"));
        assert!(validate(&JobSpec {
            corpus_id: String::new(),
            ..spec(1)
        })
        .is_err());
        assert!(validate(&spec(0))
            .unwrap_err()
            .to_string()
            .contains("no queries"));
        validate(&spec(3)).unwrap();
    }

    #[test]
    fn hits_must_answer_each_query_of_the_task_once() {
        let (tasks, _) = plan_tasks(
            "j",
            &JobSpec {
                bm25_depth: 2,
                ..spec(2)
            },
            1,
        );
        let hits = |q: &str, n: usize| QueryHits {
            query_id: q.into(),
            shard: 0,
            hits: (0..n)
                .map(|i| SearchHit {
                    doc_id: format!("d{i}"),
                    score: 1.0,
                })
                .collect(),
        };
        check_hits(&tasks[0], &[hits("q0", 2), hits("q1", 0)]).unwrap();
        assert!(check_hits(&tasks[0], &[hits("q0", 2)]).is_err());
        assert!(check_hits(&tasks[0], &[hits("q0", 2), hits("q0", 1)]).is_err());
        assert!(check_hits(&tasks[0], &[hits("q0", 3), hits("q1", 0)]).is_err());
        assert!(check_hits(&tasks[0], &[hits("q0", 1), hits("qx", 0)]).is_err());
    }
}
