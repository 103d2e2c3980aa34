//! Corpora and jobs as stored: validation of uploaded documents, corpus shards, and the
//! split of a job into tasks. Errors name the record and the field.

use crate::error::{CoordinatorError, Result};
use crate::scheduler::{task_id, JobPlan, MAX_ATTEMPTS_LIMIT};
use crate::search_job;
use labelfleet_cluster::blobs::Blobs;
pub use labelfleet_cluster::layout::{corpus_prefix, corpus_shard_key};
use labelfleet_proto::v1::{
    model_ref, Committee, CorpusChunk, Document, JobKind, JobSpec, ModelRef, OpenAiEndpoint,
    PairInput, Rejection, Task, TaskKind,
};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Longest accepted document body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Documents per corpus shard object.
pub const SHARD_DOCUMENTS: usize = 5_000;
pub const DEFAULT_TASK_SIZE: usize = 200;
pub const MAX_TASK_SIZE: usize = 10_000;

/// Takes an uploaded corpus chunk by chunk, keeping the first of duplicate ids, and writes
/// each shard of [`SHARD_DOCUMENTS`] documents to a staging prefix as soon as it is full, so
/// an upload holds one shard (and the ids seen), never the corpus. The corpus id is a hash of
/// the accepted documents, known only at the end: [`CorpusBuilder::finish`] then moves the
/// shards under it. The same corpus uploaded twice gives the same id and the same objects.
pub struct CorpusBuilder {
    pub name: String,
    staging: String,
    pending: Vec<Document>,
    shards: usize,
    accepted: u64,
    hasher: Sha256,
    seen: HashSet<String>,
    pub rejected: Vec<Rejection>,
    received: usize,
    /// Bytes of documents received, and the most one upload may send.
    bytes: u64,
    max_bytes: u64,
}

impl Default for CorpusBuilder {
    fn default() -> Self {
        CorpusBuilder {
            name: String::new(),
            staging: format!("uploads/{:016x}", rand::random::<u64>()),
            pending: Vec::new(),
            shards: 0,
            accepted: 0,
            hasher: Sha256::new(),
            seen: HashSet::new(),
            rejected: Vec::new(),
            received: 0,
            bytes: 0,
            max_bytes: u64::MAX,
        }
    }
}

impl CorpusBuilder {
    /// A builder that refuses an upload once it has sent more than `max_bytes` of documents.
    pub fn with_limit(max_bytes: u64) -> Self {
        CorpusBuilder {
            max_bytes,
            ..Default::default()
        }
    }

    /// Checks a chunk's documents (rejections name the record and field) and writes any shard
    /// that fills up.
    pub async fn add_chunk(&mut self, chunk: CorpusChunk, blobs: &Blobs) -> Result<()> {
        if self.name.is_empty() {
            self.name = chunk.corpus_name;
        }
        for doc in chunk.documents {
            self.received += 1;
            self.bytes += doc.encoded_len() as u64;
            if self.bytes > self.max_bytes {
                return Err(CoordinatorError::LimitExceeded(format!(
                    "UploadCorpus: document #{} takes the upload past its limit of {} bytes (--max-upload-mib); nothing of this upload is kept",
                    self.received, self.max_bytes
                )));
            }
            match self.problem(&doc) {
                Some(r) => self.rejected.push(r),
                None => {
                    self.seen.insert(doc.id.clone());
                    self.hasher.update(doc.encode_to_vec());
                    self.accepted += 1;
                    self.pending.push(doc);
                    if self.pending.len() >= SHARD_DOCUMENTS {
                        self.write_shard(blobs).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn problem(&self, doc: &Document) -> Option<Rejection> {
        let reject = |field: &str, message: String| Rejection {
            location: format!("document #{}", self.received),
            id: doc.id.clone(),
            field: field.into(),
            message,
        };
        if doc.id.trim().is_empty() {
            Some(reject("id", "missing or empty".into()))
        } else if self.seen.contains(&doc.id) {
            Some(reject(
                "id",
                "duplicate id; the first record is kept".into(),
            ))
        } else if doc.body.trim().is_empty() && doc.title.trim().is_empty() {
            Some(reject("body", "empty (and no title)".into()))
        } else if doc.body.len() > MAX_BODY_BYTES {
            Some(reject(
                "body",
                format!(
                    "{} bytes, over the {MAX_BODY_BYTES}-byte limit",
                    doc.body.len()
                ),
            ))
        } else {
            None
        }
    }

    async fn write_shard(&mut self, blobs: &Blobs) -> Result<()> {
        let chunk = CorpusChunk {
            corpus_name: self.name.clone(),
            documents: std::mem::take(&mut self.pending),
        };
        let key = format!("{}/shard-{:05}.pb", self.staging, self.shards);
        blobs.put(&key, chunk.encode_to_vec()).await?;
        self.shards += 1;
        Ok(())
    }

    /// Deletes what an upload that broke off had staged.
    pub async fn abandon(self, blobs: &Blobs) -> Result<()> {
        blobs.delete_prefix(&format!("{}/", self.staging)).await?;
        Ok(())
    }

    /// Writes the last shard and moves every shard under the corpus id; returns the id and
    /// the number of documents accepted.
    pub async fn finish(mut self, blobs: &Blobs) -> Result<(String, u64)> {
        if !self.pending.is_empty() {
            self.write_shard(blobs).await?;
        }
        let id = format!("c-{}", &hex::encode(self.hasher.finalize_reset())[..16]);
        let already = !blobs.list(&corpus_prefix(&id)).await?.is_empty();
        for shard in 0..self.shards {
            let staged = format!("{}/shard-{shard:05}.pb", self.staging);
            if already {
                blobs.delete(&staged).await?;
            } else {
                blobs.rename(&staged, &corpus_shard_key(&id, shard)).await?;
            }
        }
        Ok((id, self.accepted))
    }
}

/// The keys of a corpus's shards, in upload order (none for an unknown corpus).
pub async fn corpus_shards(blobs: &Blobs, corpus: &str) -> Result<Vec<String>> {
    let mut keys = blobs.list(&corpus_prefix(corpus)).await?;
    keys.sort();
    Ok(keys)
}

/// One shard's documents (None when the object is gone).
pub async fn read_shard(blobs: &Blobs, key: &str) -> Result<Option<CorpusChunk>> {
    let Some(bytes) = blobs.get(key).await? else {
        return Ok(None);
    };
    let chunk = CorpusChunk::decode(bytes)
        .map_err(|e| CoordinatorError::DataLoss(format!("corpus shard `{key}`: {e}")))?;
    Ok(Some(chunk))
}

/// Reads every shard of a corpus into an id -> document map (tests only: planning reads a
/// corpus shard by shard, see [`crate::planner`]).
#[cfg(test)]
pub async fn load_corpus(blobs: &Blobs, corpus: &str) -> Result<HashMap<String, Document>> {
    let keys = corpus_shards(blobs, corpus).await?;
    if keys.is_empty() {
        return Err(CoordinatorError::Invalid(format!(
            "corpus_id `{corpus}`: no such corpus (upload it first)"
        )));
    }
    let mut docs = HashMap::new();
    for key in keys {
        let Some(chunk) = read_shard(blobs, &key).await? else {
            continue;
        };
        for d in chunk.documents {
            docs.insert(d.id.clone(), d);
        }
    }
    Ok(docs)
}

/// Documents per query-synthesis task by default.
pub const DEFAULT_SYNTHESIS_TASK_SIZE: usize = 8;
/// The generator of a synthesis job when the spec names none.
pub const DEFAULT_GENERATOR: &str = "smollm2";

/// A job that writes queries for seed documents (no pairs given).
pub fn is_synthesis(spec: &JobSpec) -> bool {
    match JobKind::try_from(spec.kind) {
        Ok(JobKind::Synthesize) => true,
        Ok(JobKind::Unspecified) => spec.label_pairs.is_empty() && spec.seed_documents > 0,
        _ => false,
    }
}

/// A job that runs the whole method (see [`crate::corpus_job`]).
pub fn is_corpus(spec: &JobSpec) -> bool {
    spec.kind == JobKind::Corpus as i32
}

/// Checks a spec before anything is stored; errors name the field (and the pair).
pub fn validate_spec(spec: &JobSpec) -> Result<()> {
    validate_spec_settings(spec)?;
    if is_synthesis(spec) || is_corpus(spec) || search_job::is_search(spec) {
        return Ok(());
    }
    if spec.label_pairs.is_empty() {
        return Err(CoordinatorError::Invalid(
            "spec.label_pairs: no pairs to label".into(),
        ));
    }
    let mut seen = HashSet::new();
    for (i, p) in spec.label_pairs.iter().enumerate() {
        check_pair(i as u64, p)?;
        if !seen.insert(p.pair_id.as_str()) {
            return Err(CoordinatorError::Invalid(format!(
                "{}.pair_id: duplicate",
                pair_name(i as u64, p)
            )));
        }
    }
    Ok(())
}

pub(crate) fn pair_name(i: u64, p: &PairInput) -> String {
    if p.pair_id.is_empty() {
        format!("spec.label_pairs[{i}]")
    } else {
        format!("spec.label_pairs[{i}] (pair `{}`)", p.pair_id)
    }
}

/// A pair's own fields (the pair is named by its position in the job).
pub(crate) fn check_pair(i: u64, p: &PairInput) -> Result<()> {
    if p.pair_id.trim().is_empty() {
        return Err(CoordinatorError::Invalid(format!(
            "{}.pair_id: missing or empty",
            pair_name(i, p)
        )));
    }
    if p.document.is_none() {
        return Err(CoordinatorError::Invalid(format!(
            "{}.document: neither doc_id nor inline",
            pair_name(i, p)
        )));
    }
    Ok(())
}

/// Spec fields of the stages only a corpus job runs (BM25 negatives, distillation, labeling
/// BM25 candidates): a labeling or synthesis spec that sets one is refused rather than
/// silently run without it.
fn corpus_only_fields(spec: &JobSpec) -> Vec<&'static str> {
    let set = [
        ("consistency_depth", spec.consistency_depth != 0),
        ("student_layers", spec.student_layers != 0),
        ("student_max_tokens", spec.student_max_tokens != 0),
        ("label_queries", !spec.label_queries.is_empty()),
        ("label_queries_sample", spec.label_queries_sample != 0),
        ("human_judgments", !spec.human_judgments.is_empty()),
        ("committee", spec.committee.is_some()),
        ("bm25_depth", spec.bm25_depth != 0),
        ("negatives_per_query", spec.negatives_per_query != 0),
        ("rank_sampling", spec.rank_sampling != 0),
        ("epochs", spec.epochs != 0),
        ("learning_rate", spec.learning_rate != 0.0),
        ("heldout_fraction", spec.heldout_fraction != 0.0),
        (
            "label_candidates_per_query",
            spec.label_candidates_per_query != 0,
        ),
    ];
    set.iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect()
}

/// Checks everything in a spec but its pairs (a streamed submit sends those later).
pub fn validate_spec_settings(spec: &JobSpec) -> Result<()> {
    let invalid = |m: String| Err(CoordinatorError::Invalid(m));
    if !spec.corpus_id.is_empty() {
        labelfleet_cluster::ids::check_id("spec.corpus_id", &spec.corpus_id)
            .map_err(CoordinatorError::Invalid)?;
    }
    if is_corpus(spec) {
        return crate::corpus_job::validate(spec);
    }
    if search_job::is_search(spec) {
        return search_job::validate(spec);
    }
    let unsupported = corpus_only_fields(spec);
    if !unsupported.is_empty() {
        return invalid(format!(
            "spec.{}: only a corpus job (kind JOB_KIND_CORPUS) runs the BM25, distillation \
             and target stages; leave these fields unset in a labeling or synthesis job",
            unsupported.join(", spec.")
        ));
    }
    if spec.max_task_attempts > MAX_ATTEMPTS_LIMIT {
        return invalid(format!(
            "spec.max_task_attempts: {} is over the limit of {MAX_ATTEMPTS_LIMIT}",
            spec.max_task_attempts
        ));
    }
    if spec.task_size as usize > MAX_TASK_SIZE {
        return invalid(format!(
            "spec.task_size: {} is over the limit of {MAX_TASK_SIZE}",
            spec.task_size
        ));
    }
    if is_synthesis(spec) {
        if spec.corpus_id.is_empty() {
            return invalid(
                "spec.corpus_id: a synthesis job samples seed documents from a corpus".into(),
            );
        }
        match spec.teacher.as_ref().and_then(|m| m.source.as_ref()) {
            Some(model_ref::Source::Openai(o)) => validate_endpoint("spec.teacher.openai", o)?,
            Some(model_ref::Source::Committee(_)) => {
                return invalid(
                    "spec.teacher: a committee grades; it writes no queries (use a decoder or an \
                     endpoint)"
                        .into(),
                )
            }
            _ => {}
        }
        if spec.metadata_queries_per_document > 16 {
            return invalid(format!(
                "spec.metadata_queries_per_document: {} is over the limit of 16",
                spec.metadata_queries_per_document
            ));
        }
        if spec.queries_per_document > 16 {
            return invalid(format!(
                "spec.queries_per_document: {} is over the limit of 16",
                spec.queries_per_document
            ));
        }
        return Ok(());
    }
    match spec.student.as_ref().and_then(|m| m.source.as_ref()) {
        None => {
            return invalid(
                "spec.student: a model is required (local_path, checkpoint_id or openai)".into(),
            )
        }
        Some(model_ref::Source::Openai(o)) => {
            validate_endpoint("spec.student.openai", o)?;
            validate_api_grade_labels(spec)?;
        }
        Some(model_ref::Source::Committee(c)) => {
            validate_committee("spec.student.committee", c, spec)?
        }
        Some(_) => {}
    }
    Ok(())
}

/// A committee's rules, and the grade scale it grades on.
pub fn validate_committee(field: &str, c: &Committee, spec: &JobSpec) -> Result<()> {
    labelfleet_cluster::committee::check(field, c).map_err(CoordinatorError::Invalid)?;
    let grades = labelfleet_cluster::committee::COMMITTEE_GRADES;
    if !spec.grade_labels.is_empty() && spec.grade_labels.len() != grades {
        return Err(CoordinatorError::Invalid(format!(
            "spec.grade_labels: a committee grades on {grades} grades, not {}",
            spec.grade_labels.len()
        )));
    }
    Ok(())
}

/// The grades an API teacher reads: the digits "0".."3".
const API_GRADE_LABELS: [&str; 4] = ["0", "1", "2", "3"];

/// An API teacher answers a digit per grade: a job may name those labels, or none.
fn validate_api_grade_labels(spec: &JobSpec) -> Result<()> {
    if spec.grade_labels.is_empty() || spec.grade_labels == API_GRADE_LABELS {
        return Ok(());
    }
    Err(CoordinatorError::Invalid(format!(
        "spec.grade_labels: an OpenAI endpoint grades on {}; got {:?}",
        API_GRADE_LABELS.join(", "),
        spec.grade_labels
    )))
}

/// Checks an OpenAI-compatible endpoint a job names (at `field`, e.g. `spec.student.openai`);
/// the error names the bad field. The workers call it, with the key from their environment.
pub fn validate_endpoint(field: &str, o: &OpenAiEndpoint) -> Result<()> {
    let invalid =
        |name: &str, m: String| Err(CoordinatorError::Invalid(format!("{field}.{name}: {m}")));
    let url = o.base_url.trim();
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        return invalid(
            "base_url",
            format!("`{url}` is not an http:// or https:// URL with a host"),
        );
    }
    if o.model.trim().is_empty() {
        return invalid("model", "empty: name the model the endpoint serves".into());
    }
    let key = o.api_key_env.trim();
    let key_ok = key.is_empty()
        || (key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit()));
    if !key_ok {
        return invalid(
            "api_key_env",
            format!("`{key}` is not an environment variable name"),
        );
    }
    for (name, v) in [
        ("requests_per_second", o.requests_per_second),
        ("tokens_per_minute", o.tokens_per_minute),
        (
            "usd_per_million_input_tokens",
            o.usd_per_million_input_tokens,
        ),
        (
            "usd_per_million_output_tokens",
            o.usd_per_million_output_tokens,
        ),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return invalid(name, format!("{v} is not a number >= 0 (0: none)"));
        }
    }
    Ok(())
}

/// Cuts a labeling job's pairs, their documents already inlined (see [`crate::planner`]),
/// into grading tasks of `task_size` pairs, one task at a time. A pair id repeated within a
/// task is refused, the pair named by its position in the job.
pub struct TaskCutter<'a> {
    job_id: &'a str,
    spec: &'a JobSpec,
    size: usize,
    pending: Vec<PairInput>,
    pairs: u64,
    tasks: u32,
}

impl<'a> TaskCutter<'a> {
    pub fn new(job_id: &'a str, spec: &'a JobSpec) -> Self {
        let size = plan_of(spec, 0).task_size as usize;
        TaskCutter {
            job_id,
            spec,
            size,
            pending: Vec::with_capacity(size),
            pairs: 0,
            tasks: 0,
        }
    }

    /// Pairs taken so far.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// Takes the next pair (`index`: its position in the job, to name it); returns a task
    /// when one is full.
    pub fn push(&mut self, index: u64, pair: PairInput) -> Result<Option<Task>> {
        let i = index;
        if self.pending.iter().any(|p| p.pair_id == pair.pair_id) {
            return Err(CoordinatorError::Invalid(format!(
                "{}.pair_id: duplicate",
                pair_name(i, &pair)
            )));
        }
        self.pairs += 1;
        self.pending.push(pair);
        Ok((self.pending.len() >= self.size).then(|| self.cut()))
    }

    /// The last, partly filled task, if any.
    pub fn finish(mut self) -> Option<Task> {
        (!self.pending.is_empty()).then(|| self.cut())
    }

    fn cut(&mut self) -> Task {
        let pairs = std::mem::replace(&mut self.pending, Vec::with_capacity(self.size));
        let task = Task {
            task_id: task_id(self.job_id, self.tasks),
            job_id: self.job_id.to_string(),
            kind: TaskKind::Grade as i32,
            model: self.spec.student.clone(),
            prompt_version: self.spec.grade_prompt_version.clone(),
            grade_labels: self.spec.grade_labels.clone(),
            pairs,
            seed: self.spec.seed,
            max_tokens: self.spec.max_tokens,
            ..Default::default()
        };
        self.tasks += 1;
        task
    }
}

/// The seed sample of a synthesis job over `ids` ids: positions in the ids sorted, taken from
/// a shuffle seeded by `spec.seed` (deterministic; the shuffle depends on the count only).
pub fn sample_seed_ranks(ids: usize, spec: &JobSpec) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut ranks: Vec<usize> = (0..ids).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    ranks.shuffle(&mut rng);
    ranks.truncate((spec.seed_documents as usize).min(ids));
    ranks
}

/// Samples the seed documents of a synthesis job from a corpus held in memory (deterministic
/// in `spec.seed`) and splits them into query-synthesis tasks. The coordinator never holds a
/// corpus: it samples the same seeds shard by shard ([`crate::planner`]).
pub fn plan_synthesis_tasks(
    job_id: &str,
    spec: &JobSpec,
    corpus: &HashMap<String, Document>,
) -> Result<Vec<Task>> {
    let mut ids: Vec<&String> = corpus.keys().collect();
    ids.sort();
    let mut seeds: Vec<&String> = sample_seed_ranks(ids.len(), spec)
        .into_iter()
        .map(|r| ids[r])
        .collect();
    seeds.sort();
    let documents = seeds.iter().map(|id| corpus[*id].clone()).collect();
    Ok(synthesis_tasks(job_id, spec, documents))
}

/// Splits seed documents (in id order) into query-synthesis tasks.
pub fn synthesis_tasks(job_id: &str, spec: &JobSpec, seeds: Vec<Document>) -> Vec<Task> {
    let size = plan_of(spec, 0).task_size as usize;
    let model = spec.teacher.clone().or_else(|| {
        Some(ModelRef {
            source: Some(model_ref::Source::LocalPath(DEFAULT_GENERATOR.into())),
        })
    });
    let per_doc = match spec.queries_per_document {
        0 => 3,
        n => n,
    };
    seeds
        .chunks(size)
        .enumerate()
        .map(|(k, chunk)| Task {
            task_id: task_id(job_id, k as u32),
            job_id: job_id.to_string(),
            kind: TaskKind::SynthesizeQueries as i32,
            model: model.clone(),
            prompt_version: spec.query_prompt_version.clone(),
            documents: chunk.to_vec(),
            queries_per_document: per_doc,
            metadata_queries_per_document: spec.metadata_queries_per_document,
            seed: spec.seed,
            max_tokens: spec.max_tokens,
            ..Default::default()
        })
        .collect()
}

/// What the tasks of a (non-corpus) job are.
pub fn task_kind(spec: &JobSpec) -> TaskKind {
    if is_synthesis(spec) {
        TaskKind::SynthesizeQueries
    } else if search_job::is_search(spec) {
        TaskKind::Search
    } else {
        TaskKind::Grade
    }
}

/// The plan of a job's tasks: how many, of what size, over how many items.
pub fn plan_of(spec: &JobSpec, items: u64) -> JobPlan {
    let default = if is_synthesis(spec) {
        DEFAULT_SYNTHESIS_TASK_SIZE
    } else {
        DEFAULT_TASK_SIZE
    };
    let size = match spec.task_size as usize {
        0 => default,
        n => n,
    };
    JobPlan::new(items, size as u32)
}

pub fn spec_key(job: &str) -> String {
    format!("jobs/{job}/spec.pb")
}
pub fn task_key(job: &str, task: &str) -> String {
    format!("jobs/{job}/tasks/{task}.pb")
}
pub fn tasks_prefix(job: &str) -> String {
    format!("jobs/{job}/tasks/")
}
pub fn result_key(job: &str, task: &str) -> String {
    format!("jobs/{job}/results/{task}.pb")
}
/// Every object of a job.
pub fn job_prefix(job: &str) -> String {
    format!("jobs/{job}/")
}
pub fn results_prefix(job: &str) -> String {
    format!("jobs/{job}/results/")
}
/// Where a streamed submit spills its pairs, grouped by shard, until it cuts the tasks.
pub fn spill_prefix(job: &str) -> String {
    format!("jobs/{job}/spill/")
}
/// The `seq`th spilled object of group `group` (0: pairs with inline documents; `s + 1`:
/// pairs whose document is in shard `s`).
pub fn spill_key(job: &str, group: u32, seq: u32) -> String {
    format!("jobs/{job}/spill/g{group:08}-{seq:08}.pb")
}

/// The task id a task or result key names.
pub fn task_id_of_key(key: &str) -> Option<&str> {
    key.rsplit('/').next()?.strip_suffix(".pb")
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::pair_input;

    fn doc(id: &str, body: &str) -> Document {
        Document {
            id: id.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn corpus_rejections_name_the_record_and_field_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut b = CorpusBuilder::default();
        let chunk = CorpusChunk {
            corpus_name: "c".into(),
            documents: vec![
                doc("a", "x"),
                doc("", "x"),
                doc("a", "y"),
                doc("b", ""),
                doc("c", &"z".repeat(MAX_BODY_BYTES + 1)),
                doc("d", "ok"),
            ],
        };
        rt.block_on(b.add_chunk(chunk, &blobs)).unwrap();
        let fields: Vec<(String, String, String)> = b
            .rejected
            .iter()
            .map(|r| (r.location.clone(), r.id.clone(), r.field.clone()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("document #2".into(), "".into(), "id".into()),
                ("document #3".into(), "a".into(), "id".into()),
                ("document #4".into(), "b".into(), "body".into()),
                ("document #5".into(), "c".into(), "body".into()),
            ]
        );
        let (id, accepted) = rt.block_on(b.finish(&blobs)).unwrap();
        assert_eq!(accepted, 2);
        let docs = rt.block_on(load_corpus(&blobs, &id)).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs["a"].body, "x", "the first of duplicate ids is kept");
        // Nothing is left in staging, and the same corpus again gives the same id.
        assert!(rt.block_on(blobs.list("uploads/")).unwrap().is_empty());
        let mut again = CorpusBuilder::default();
        let chunk = CorpusChunk {
            corpus_name: "c".into(),
            documents: vec![doc("a", "x"), doc("d", "ok")],
        };
        rt.block_on(again.add_chunk(chunk, &blobs)).unwrap();
        assert_eq!(rt.block_on(again.finish(&blobs)).unwrap(), (id, 2));
    }

    #[test]
    fn tasks_inline_documents_and_unknown_ids_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let shard = CorpusChunk {
            corpus_name: "c".into(),
            documents: vec![doc("d1", "body")],
        };
        rt.block_on(blobs.put(&corpus_shard_key("c1", 0), shard.encode_to_vec()))
            .unwrap();
        let plan = |job: &str, spec: &JobSpec| {
            rt.block_on(crate::planner::Planner::new(&blobs).plan_labeling(job, spec))
        };
        let pair = |id: &str, doc: &str| PairInput {
            pair_id: id.into(),
            query: "q".into(),
            document: Some(pair_input::Document::DocId(doc.into())),
            ..Default::default()
        };
        let mut spec = JobSpec {
            corpus_id: "c1".into(),
            student: Some(ModelRef {
                source: Some(labelfleet_proto::v1::model_ref::Source::LocalPath(
                    "m".into(),
                )),
            }),
            label_pairs: (0..5).map(|i| pair(&format!("p{i}"), "d1")).collect(),
            task_size: 2,
            ..Default::default()
        };
        validate_spec(&spec).unwrap();
        assert_eq!(plan("j", &spec).unwrap(), 5);
        let keys = rt.block_on(blobs.list(&tasks_prefix("j"))).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(task_id_of_key(&keys[2]), Some("j-t00002"));
        let first = Task::decode(rt.block_on(blobs.get(&keys[0])).unwrap().unwrap()).unwrap();
        assert!(matches!(
            &first.pairs[0].document,
            Some(pair_input::Document::Inline(d)) if d.body == "body"
        ));
        spec.label_pairs.push(pair("p9", "nope"));
        let err = plan("j2", &spec).unwrap_err().to_string();
        assert!(
            err.contains("label_pairs[5] (pair `p9`).doc_id: `nope`"),
            "{err}"
        );
        spec.label_pairs.push(pair("p9", "d1"));
        let err = validate_spec(&spec).unwrap_err().to_string();
        assert!(
            err.contains("label_pairs[6] (pair `p9`).pair_id: duplicate"),
            "{err}"
        );
    }

    #[test]
    fn corpus_stage_fields_are_refused_by_name_in_a_synthesis_job() {
        let spec = JobSpec {
            seed_documents: 3,
            corpus_id: "c".into(),
            negatives_per_query: 4,
            epochs: 2,
            ..Default::default()
        };
        let err = validate_spec(&spec).unwrap_err().to_string();
        assert!(
            err.contains("spec.negatives_per_query, spec.epochs"),
            "{err}"
        );
    }

    /// A labeling job of one pair with `student`.
    fn one_pair_labeling(student: Option<ModelRef>) -> JobSpec {
        JobSpec {
            student,
            label_pairs: vec![PairInput {
                pair_id: "p1".into(),
                query: "q".into(),
                document: Some(pair_input::Document::DocId("d1".into())),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_openai_model_labels_and_synthesizes_and_its_errors_name_the_field() {
        let endpoint = OpenAiEndpoint {
            base_url: "http://127.0.0.1:8080/v1".into(),
            model: "smollm2".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            requests_per_second: 4.0,
            ..Default::default()
        };
        let api = |o: &OpenAiEndpoint| {
            Some(ModelRef {
                source: Some(model_ref::Source::Openai(o.clone())),
            })
        };
        let label = |o: &OpenAiEndpoint| one_pair_labeling(api(o));
        let synthesize = |o: &OpenAiEndpoint| JobSpec {
            kind: JobKind::Synthesize as i32,
            corpus_id: "c".into(),
            seed_documents: 3,
            teacher: api(o),
            ..Default::default()
        };
        validate_spec(&label(&endpoint)).unwrap();
        validate_spec(&synthesize(&endpoint)).unwrap();
        let keyless = OpenAiEndpoint {
            api_key_env: String::new(),
            ..endpoint.clone()
        };
        validate_spec(&label(&keyless)).unwrap();
        type Spoil = fn(&mut OpenAiEndpoint);
        let cases: [(Spoil, &str); 5] = [
            (|o| o.base_url = "127.0.0.1:8080/v1".into(), "base_url"),
            (|o| o.base_url = "https://".into(), "base_url"),
            (|o| o.model = " ".into(), "model"),
            (|o| o.api_key_env = "MY KEY".into(), "api_key_env"),
            (|o| o.requests_per_second = -1.0, "requests_per_second"),
        ];
        for (spoil, field) in cases {
            let mut bad = endpoint.clone();
            spoil(&mut bad);
            let e = validate_spec(&label(&bad)).unwrap_err().to_string();
            assert!(
                e.contains(&format!(": spec.student.openai.{field}:")),
                "{e}"
            );
            let e = validate_spec(&synthesize(&bad)).unwrap_err().to_string();
            assert!(
                e.contains(&format!(": spec.teacher.openai.{field}:")),
                "{e}"
            );
        }
        let mut other_labels = label(&endpoint);
        other_labels.grade_labels = vec!["bad".into(), "good".into()];
        let e = validate_spec(&other_labels).unwrap_err().to_string();
        assert!(e.contains(": spec.grade_labels:"), "{e}");
    }

    #[test]
    fn a_committee_labels_but_writes_no_queries() {
        use labelfleet_proto::v1::{judge, Judge};
        let committee = |weight: f64| {
            Some(ModelRef {
                source: Some(model_ref::Source::Committee(Committee {
                    judges: vec![Judge {
                        name: "decoder".into(),
                        weight,
                        kind: Some(judge::Kind::LocalPath("smollm2".into())),
                    }],
                })),
            })
        };
        let label = one_pair_labeling(committee(1.0));
        validate_spec(&label).unwrap();
        let mut bad = label.clone();
        bad.student = committee(0.0);
        let e = validate_spec(&bad).unwrap_err().to_string();
        assert!(e.contains("spec.student.committee.judges[0].weight"), "{e}");
        let mut scale = label.clone();
        scale.grade_labels = vec!["bad".into(), "good".into()];
        let e = validate_spec(&scale).unwrap_err().to_string();
        assert!(
            e.contains("spec.grade_labels: a committee grades on 4"),
            "{e}"
        );
        let synthesize = JobSpec {
            kind: JobKind::Synthesize as i32,
            corpus_id: "c".into(),
            seed_documents: 3,
            teacher: committee(1.0),
            ..Default::default()
        };
        let e = validate_spec(&synthesize).unwrap_err().to_string();
        assert!(
            e.contains("spec.teacher: a committee grades; it writes no queries"),
            "{e}"
        );
    }

    #[test]
    fn synthesis_samples_seed_documents_deterministically() {
        let corpus: HashMap<String, Document> = (0..50)
            .map(|i| (format!("d{i}"), doc(&format!("d{i}"), "text")))
            .collect();
        let spec = JobSpec {
            corpus_id: "c".into(),
            seed_documents: 10,
            queries_per_document: 2,
            task_size: 4,
            seed: 7,
            ..Default::default()
        };
        assert!(is_synthesis(&spec));
        validate_spec(&spec).unwrap();
        let a = plan_synthesis_tasks("j", &spec, &corpus).unwrap();
        let b = plan_synthesis_tasks("j", &spec, &corpus).unwrap();
        assert_eq!(a, b, "same seed, same sample");
        assert_eq!(
            a.iter().map(|t| t.documents.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert!(a
            .iter()
            .all(|t| t.kind == TaskKind::SynthesizeQueries as i32 && t.queries_per_document == 2));
        let ids: HashSet<&str> = a
            .iter()
            .flat_map(|t| t.documents.iter().map(|d| d.id.as_str()))
            .collect();
        assert_eq!(ids.len(), 10);
        let other = plan_synthesis_tasks(
            "j",
            &JobSpec {
                seed: 8,
                ..spec.clone()
            },
            &corpus,
        )
        .unwrap();
        assert_ne!(a, other, "another seed, another sample");
        let no_corpus = JobSpec {
            corpus_id: String::new(),
            ..spec
        };
        assert!(validate_spec(&no_corpus)
            .unwrap_err()
            .to_string()
            .contains("spec.corpus_id"));
    }
}
