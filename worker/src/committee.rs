//! A committee teacher's grading task: each judge grades every pair on the engine thread, one
//! judge after another, and each label is the judges' weighted mean distribution
//! (`labelfleet_cluster::committee::pool`), with every judge's own distribution kept in it.
//!
//! A similarity judge reads an uploaded corpus (feedback and calibration): the worker reads the
//! corpus's shards from the object store once and keeps the texts of the corpora it used last;
//! the engine thread keeps the index it embeds from them.

use crate::engine::{document_pair, grading_input, label, local_model, Engine, Outcome};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::committee::{self, COMMITTEE_GRADES};
use labelfleet_cluster::layout::corpus_prefix;
use labelfleet_proto::v1::{judge, Committee, CorpusChunk, JudgeGrade, Label, Task};
use labelfleet_slm::grading::{document_text, GradePrompt, Grading, Pair};
use labelfleet_slm::host::{GradeRequest, Graded, SimilarityRequest};
use labelfleet_slm::similarity::Feedback;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Corpora whose texts a worker keeps (a similarity judge's corpus is read once).
const KEPT_CORPORA: usize = 2;

/// Why a committee task could not run, and whether another attempt may succeed.
struct Failure {
    reason: String,
    retryable: bool,
}

/// The texts of uploaded corpora, read from the object store.
pub struct Corpora {
    blobs: Blobs,
    kept: Mutex<VecDeque<(String, Arc<Vec<String>>)>>,
}

impl Corpora {
    pub fn new(blobs: Blobs) -> Self {
        Corpora {
            blobs,
            kept: Mutex::new(VecDeque::new()),
        }
    }

    /// Every document of `corpus`, as the text a pair's document is read as.
    async fn texts(&self, corpus: &str) -> Result<Arc<Vec<String>>, Failure> {
        let kept = self
            .kept
            .lock()
            .expect("corpora lock")
            .iter()
            .find(|(c, _)| c == corpus)
            .map(|(_, t)| t.clone());
        if let Some(texts) = kept {
            return Ok(texts);
        }
        let transient = |reason: String| Failure {
            reason,
            retryable: true,
        };
        let prefix = corpus_prefix(corpus);
        let keys = self
            .blobs
            .list(&prefix)
            .await
            .map_err(|e| transient(format!("listing `{prefix}`: {e}")))?;
        if keys.is_empty() {
            return Err(Failure {
                reason: format!("corpus `{corpus}` is not uploaded (nothing under `{prefix}`)"),
                retryable: false,
            });
        }
        let mut texts = vec![];
        for key in keys {
            let bytes = self
                .blobs
                .get(&key)
                .await
                .map_err(|e| transient(format!("reading `{key}`: {e}")))?
                .ok_or_else(|| transient(format!("`{key}` went away while being read")))?;
            let chunk = CorpusChunk::decode(bytes).map_err(|e| Failure {
                reason: format!("corpus shard `{key}`: {e}"),
                retryable: false,
            })?;
            texts.extend(
                chunk
                    .documents
                    .iter()
                    .map(|d| document_text(&document_pair(d.id.clone(), "", d))),
            );
        }
        let texts = Arc::new(texts);
        let mut kept = self.kept.lock().expect("corpora lock");
        kept.push_back((corpus.to_string(), texts.clone()));
        while kept.len() > KEPT_CORPORA {
            kept.pop_front();
        }
        Ok(texts)
    }
}

/// Grades a task with every judge of `c` and pools their distributions.
pub async fn grade(engine: &Engine, task: &Task, c: &Committee, max_len: usize) -> Outcome {
    let start = Instant::now();
    let bad = |reason: String| Outcome::Failed {
        reason,
        retryable: false,
    };
    if let Err(reason) = check_task(task, c) {
        return bad(reason);
    }
    let (prompt, pairs) = match grading_input(task) {
        Ok(input) => input,
        Err(reason) => return bad(reason),
    };
    let mut verdicts = Vec::with_capacity(c.judges.len());
    for j in &c.judges {
        match run_judge(engine, j, prompt, max_len, &pairs).await {
            Ok(graded) => verdicts.push(graded),
            Err(f) => {
                return Outcome::Failed {
                    reason: format!("judge `{}`: {}", j.name, f.reason),
                    retryable: f.retryable,
                }
            }
        }
    }
    match pooled_labels(task, c, &verdicts, prompt) {
        Ok(labels) => Outcome::Done {
            labels,
            queries: Vec::new(),
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: None,
        },
        Err(reason) => bad(reason),
    }
}

/// Each pair's label: the judges' pooled distribution, with every judge's own.
fn pooled_labels(
    task: &Task,
    c: &Committee,
    verdicts: &[Graded],
    prompt: GradePrompt,
) -> Result<Vec<Label>, String> {
    let weights: Vec<f64> = c.judges.iter().map(|j| j.weight).collect();
    let model = describe(c);
    let mut labels = Vec::with_capacity(task.pairs.len());
    for (i, p) in task.pairs.iter().enumerate() {
        let each: Vec<&[f32]> = verdicts
            .iter()
            .map(|v| v.gradings[i].distribution.as_slice())
            .collect();
        let pooled = committee::pool(&each, &weights).ok_or_else(|| {
            format!(
                "pair `{}`: the judges graded on different scales ({:?} grades)",
                p.pair_id,
                each.iter().map(|d| d.len()).collect::<Vec<_>>()
            )
        })?;
        let mut l = label(
            p,
            Grading::from_distribution(pooled),
            &model,
            "",
            prompt.version(),
        );
        l.judges = c
            .judges
            .iter()
            .zip(verdicts)
            .map(|(j, v)| JudgeGrade {
                judge: j.name.clone(),
                model: v.model.clone(),
                distribution: v.gradings[i].distribution.clone(),
            })
            .collect();
        labels.push(l);
    }
    Ok(labels)
}

/// The committee's rules, and the grade scale its judges share.
fn check_task(task: &Task, c: &Committee) -> Result<(), String> {
    committee::check("model.committee", c)?;
    if !task.grade_labels.is_empty() && task.grade_labels.len() != COMMITTEE_GRADES {
        return Err(format!(
            "grade_labels: a committee grades on {COMMITTEE_GRADES} grades, not {}",
            task.grade_labels.len()
        ));
    }
    Ok(())
}

/// The committee as its labels name it: each judge and its weight.
fn describe(c: &Committee) -> String {
    let judges: Vec<String> = c
        .judges
        .iter()
        .map(|j| format!("{}={}", j.name, j.weight))
        .collect();
    format!("committee:{}", judges.join("+"))
}

async fn run_judge(
    engine: &Engine,
    j: &labelfleet_proto::v1::Judge,
    prompt: GradePrompt,
    max_len: usize,
    pairs: &[Pair],
) -> Result<Graded, Failure> {
    let refused = |r: crate::engine::ModelRefused| Failure {
        reason: r.reason,
        retryable: r.retryable,
    };
    let engine_failed = |f: labelfleet_slm::host::EngineFailure| Failure {
        reason: f.reason,
        retryable: f.retryable,
    };
    match &j.kind {
        Some(judge::Kind::LocalPath(p)) => {
            let model = local_model(&engine.sources, p).map_err(refused)?;
            let req = GradeRequest {
                model,
                prompt,
                grade_labels: Vec::new(),
                max_len,
                pairs: pairs.to_vec(),
            };
            engine.thread.grade(req).await.map_err(engine_failed)
        }
        Some(judge::Kind::Similarity(s)) => {
            let encoder = local_model(&engine.sources, &s.encoder).map_err(refused)?;
            let Some(corpora) = &engine.corpora else {
                return Err(Failure {
                    reason: "this worker has no --store to read the judge's corpus from".into(),
                    retryable: true,
                });
            };
            let req = SimilarityRequest {
                encoder,
                corpus_id: s.corpus_id.clone(),
                corpus: corpora.texts(&s.corpus_id).await?,
                feedback: Feedback {
                    depth: s.feedback_depth as usize,
                    weight: s.feedback_weight,
                },
                max_len,
                pairs: pairs.to_vec(),
            };
            engine.thread.judge(req).await.map_err(engine_failed)
        }
        None => Err(Failure {
            reason: "no kind".into(),
            retryable: false,
        }),
    }
}
