//! Plans a job over a stored corpus shard by shard, so the coordinator never holds the corpus.
//!
//! A labeling job's pairs name documents by id, and each task carries its documents inlined.
//! The planner first reads the corpus's shards one at a time and keeps only which shard each
//! id is in ([`IdMap`], about 20 bytes per document), orders the pairs by the shard of their
//! document (pairs with inline documents first; input order within a group), cuts tasks of
//! `task_size` over that order, and inlines documents while walking the shards in order with
//! one shard loaded at a time. A streamed submit spills its pairs to the store grouped by
//! shard as they arrive ([`Spill`]), then cuts the tasks the same way. Synthesis samples its
//! seed ids from the ids alone and reads only the shards holding the seeds.
//!
//! Tasks are therefore in shard order, not input order; results are read back in task order.

use crate::error::{CoordinatorError, Result};
use crate::jobs::{self, check_pair, pair_name, TaskCutter};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_proto::v1::{pair_input, Document, JobSpec, PairInput, Task};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Task objects written at once (bounds the tasks held while they are written).
const WRITE_BATCH: usize = 16;
/// Pairs a streamed submit buffers in memory before spilling to the store, in bytes.
pub const DEFAULT_SPILL_BUDGET: usize = 32 * 1024 * 1024;

/// How many shards the planner holds now, at most at once, and has read in all (a test checks
/// that planning holds at most two shards).
#[derive(Debug, Default)]
pub struct ShardStats {
    loaded: AtomicUsize,
    peak: AtomicUsize,
    reads: AtomicUsize,
}

impl ShardStats {
    /// The most shards of documents held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    /// Shard reads so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// One shard's documents by id; counted in [`ShardStats`] until dropped.
struct LoadedShard {
    index: u32,
    docs: HashMap<String, Document>,
    stats: Arc<ShardStats>,
}

impl Drop for LoadedShard {
    fn drop(&mut self) {
        self.stats.loaded.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which shard holds each id of a corpus, keyed by a 64-bit hash of the id, not the id.
///
/// The hash is SipHash-1-3 with fixed keys (std's `DefaultHasher::new()`), only ever compared
/// within this process. Two of n ids share a hash with probability about n^2 / 2^65 (3 in a
/// million for 10 million ids), and even then nothing goes wrong: the second id of a colliding
/// hash is kept by its full id in `collided`. An id that is not in the corpus but shares a hash
/// with one that is maps to that id's shard; the document found there must have the exact id,
/// otherwise the pair is reported as not in the corpus.
#[derive(Debug, Default)]
pub struct IdMap {
    by_hash: HashMap<u64, u32>,
    collided: HashMap<String, u32>,
}

fn id_hash(id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(id.as_bytes());
    h.finish()
}

impl IdMap {
    fn insert(&mut self, id: &str, shard: u32) {
        self.insert_hashed(id_hash(id), id, shard)
    }

    fn insert_hashed(&mut self, hash: u64, id: &str, shard: u32) {
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(shard);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.to_string(), shard);
            }
        }
    }

    /// The shard that may hold `id` (None: certainly not in the corpus).
    pub fn shard_of(&self, id: &str) -> Option<u32> {
        self.shard_of_hashed(id_hash(id), id)
    }

    fn shard_of_hashed(&self, hash: u64, id: &str) -> Option<u32> {
        self.collided
            .get(id)
            .or_else(|| self.by_hash.get(&hash))
            .copied()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every id of a corpus with its shard, in one string (for the seed sample of a synthesis job,
/// which sorts the ids): the id bytes plus 16 bytes per id.
#[derive(Debug, Default)]
struct IdList {
    text: String,
    /// (start in `text`, length, shard)
    spans: Vec<(usize, u32, u32)>,
}

impl IdList {
    fn push(&mut self, id: &str, shard: u32) {
        self.spans.push((self.text.len(), id.len() as u32, shard));
        self.text.push_str(id);
    }
    fn id(&self, span: &(usize, u32, u32)) -> &str {
        &self.text[span.0..span.0 + span.1 as usize]
    }
    fn sort(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_unstable_by(|a, b| self.id(a).cmp(self.id(b)));
        self.spans = spans;
    }
}

/// Which group a pair is planned in: 0 for an inline document, `s + 1` for shard `s`.
type Group = u32;

/// Plans jobs over the corpora of one object store.
pub struct Planner<'a> {
    blobs: &'a Blobs,
    stats: Arc<ShardStats>,
    spill_budget: usize,
}

impl<'a> Planner<'a> {
    pub fn new(blobs: &'a Blobs) -> Self {
        Planner {
            blobs,
            stats: Arc::default(),
            spill_budget: DEFAULT_SPILL_BUDGET,
        }
    }

    /// The same planner, buffering at most `bytes` of a streamed job's pairs in memory.
    pub fn with_spill_budget(mut self, bytes: usize) -> Self {
        self.spill_budget = bytes.max(1);
        self
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// The shard keys of the job's corpus (none when the spec names no corpus).
    async fn shard_keys(&self, spec: &JobSpec) -> Result<Vec<String>> {
        if spec.corpus_id.is_empty() {
            return Ok(Vec::new());
        }
        let keys = jobs::corpus_shards(self.blobs, &spec.corpus_id).await?;
        if keys.is_empty() {
            return Err(CoordinatorError::Invalid(format!(
                "corpus_id `{}`: no such corpus (upload it first)",
                spec.corpus_id
            )));
        }
        Ok(keys)
    }

    /// Reads shard `index`; the caller drops the one it held first.
    async fn load_shard(&self, keys: &[String], index: u32) -> Result<LoadedShard> {
        let key = &keys[index as usize];
        let chunk = jobs::read_shard(self.blobs, key)
            .await?
            .ok_or_else(|| CoordinatorError::DataLoss(format!("corpus shard `{key}` is gone")))?;
        let now = self.stats.loaded.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.peak.fetch_max(now, Ordering::SeqCst);
        self.stats.reads.fetch_add(1, Ordering::SeqCst);
        let docs = chunk
            .documents
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        Ok(LoadedShard {
            index,
            docs,
            stats: self.stats.clone(),
        })
    }

    /// Calls `f(shard, id)` for every id of the corpus, one shard in memory at a time.
    async fn scan_ids(&self, keys: &[String], mut f: impl FnMut(u32, &str)) -> Result<()> {
        for index in 0..keys.len() as u32 {
            let shard = self.load_shard(keys, index).await?;
            for id in shard.docs.keys() {
                f(index, id);
            }
        }
        Ok(())
    }

    /// Which shard each id of the job's corpus is in.
    pub async fn id_map(&self, keys: &[String]) -> Result<IdMap> {
        let mut map = IdMap::default();
        self.scan_ids(keys, |shard, id| map.insert(id, shard))
            .await?;
        Ok(map)
    }

    /// Cuts a labeling job whose pairs are in its spec into tasks and writes them; returns the
    /// number of pairs. Every pair is checked, and every id found in the map, before a task is
    /// written; an error names the pair (its position and id) and the field.
    pub async fn plan_labeling(&self, job_id: &str, spec: &JobSpec) -> Result<u64> {
        let keys = self.shard_keys(spec).await?;
        let ids = self.id_map(&keys).await?;
        let mut order: Vec<(Group, u32)> = Vec::with_capacity(spec.label_pairs.len());
        for (i, p) in spec.label_pairs.iter().enumerate() {
            order.push((group_of(i as u64, p, &ids, spec)?, i as u32));
        }
        order.sort_by_key(|&(group, _)| group); // stable: input order within a group
        let mut cut = Cut::new(self, job_id, spec, &keys);
        for (group, i) in order {
            cut.push(group, i as u64, spec.label_pairs[i as usize].clone())
                .await?;
        }
        cut.finish().await
    }

    /// Samples a synthesis job's seed documents (the same sample as
    /// [`jobs::plan_synthesis_tasks`] for the same corpus and seed) reading the ids shard by
    /// shard, then only the shards that hold a seed; returns the tasks.
    pub async fn plan_synthesis(&self, job_id: &str, spec: &JobSpec) -> Result<Vec<Task>> {
        let keys = self.shard_keys(spec).await?;
        let mut list = IdList::default();
        self.scan_ids(&keys, |shard, id| list.push(id, shard))
            .await?;
        list.sort();
        let mut seeds: Vec<(u32, String)> = jobs::sample_seed_ranks(list.spans.len(), spec)
            .into_iter()
            .map(|r| {
                let span = &list.spans[r];
                (span.2, list.id(span).to_string())
            })
            .collect();
        drop(list);
        seeds.sort();
        let mut found: HashMap<String, Document> = HashMap::with_capacity(seeds.len());
        let mut shard: Option<LoadedShard> = None;
        for (index, id) in &seeds {
            if shard.as_ref().is_none_or(|s| s.index != *index) {
                drop(shard.take()); // one shard at a time
                shard = Some(self.load_shard(&keys, *index).await?);
            }
            if let Some(d) = shard.as_ref().and_then(|s| s.docs.get(id)) {
                found.insert(id.clone(), d.clone());
            }
        }
        drop(shard);
        let mut ids: Vec<String> = seeds.into_iter().map(|(_, id)| id).collect();
        ids.sort();
        let documents = ids
            .iter()
            .filter_map(|id| found.remove(id))
            .collect::<Vec<_>>();
        Ok(jobs::synthesis_tasks(job_id, spec, documents))
    }

    /// Starts a streamed labeling job: pairs go to [`Spill::push`] as they arrive.
    pub async fn spill<'s>(&'s self, job_id: &'s str, spec: &'s JobSpec) -> Result<Spill<'s>> {
        let keys = self.shard_keys(spec).await?;
        let ids = self.id_map(&keys).await?;
        Ok(Spill {
            planner: self,
            job_id,
            spec,
            keys,
            ids,
            groups: BTreeMap::new(),
            buffered: 0,
            pairs: 0,
        })
    }
}

/// The group of pair `i` (checked first; an unknown id is refused, naming the pair).
fn group_of(i: u64, p: &PairInput, ids: &IdMap, spec: &JobSpec) -> Result<Group> {
    check_pair(i, p)?;
    match &p.document {
        Some(pair_input::Document::DocId(id)) => ids
            .shard_of(id)
            .map(|s| s + 1)
            .ok_or_else(|| not_in_corpus(i, p, id, spec)),
        _ => Ok(0),
    }
}

fn not_in_corpus(i: u64, p: &PairInput, id: &str, spec: &JobSpec) -> CoordinatorError {
    CoordinatorError::Invalid(format!(
        "{}.doc_id: `{id}` is not in corpus `{}`",
        pair_name(i, p),
        spec.corpus_id
    ))
}

/// Walks pairs in group order: inlines each document from the one shard loaded, cuts tasks
/// and writes them in batches.
struct Cut<'p, 'a> {
    planner: &'p Planner<'a>,
    job_id: &'p str,
    spec: &'p JobSpec,
    keys: &'p [String],
    cutter: TaskCutter<'p>,
    shard: Option<LoadedShard>,
    ready: Vec<Task>,
}

impl<'p, 'a> Cut<'p, 'a> {
    fn new(
        planner: &'p Planner<'a>,
        job_id: &'p str,
        spec: &'p JobSpec,
        keys: &'p [String],
    ) -> Self {
        Cut {
            planner,
            job_id,
            spec,
            keys,
            cutter: TaskCutter::new(job_id, spec),
            shard: None,
            ready: Vec::with_capacity(WRITE_BATCH),
        }
    }

    /// Takes pair `i` of `group` (pairs come in group order).
    async fn push(&mut self, group: Group, i: u64, mut pair: PairInput) -> Result<()> {
        if group > 0 {
            self.inline(group - 1, i, &mut pair).await?;
        }
        if let Some(task) = self.cutter.push(i, pair)? {
            self.ready.push(task);
            if self.ready.len() >= WRITE_BATCH {
                self.write().await?;
            }
        }
        Ok(())
    }

    /// Replaces the pair's doc_id with the document from shard `index`.
    async fn inline(&mut self, index: u32, i: u64, pair: &mut PairInput) -> Result<()> {
        if self.shard.as_ref().is_none_or(|s| s.index != index) {
            self.shard = None; // one shard at a time
            self.shard = Some(self.planner.load_shard(self.keys, index).await?);
        }
        let Some(pair_input::Document::DocId(id)) = &pair.document else {
            return Ok(());
        };
        // The map keys hashes: the document must have the exact id.
        let doc = self.shard.as_ref().and_then(|s| s.docs.get(id));
        let doc = doc.ok_or_else(|| not_in_corpus(i, pair, id, self.spec))?;
        pair.document = Some(pair_input::Document::Inline(doc.clone()));
        Ok(())
    }

    async fn write(&mut self) -> Result<()> {
        let tasks = std::mem::take(&mut self.ready);
        write_tasks(self.planner.blobs, self.job_id, tasks).await
    }

    /// Writes the last tasks; returns the number of pairs.
    async fn finish(mut self) -> Result<u64> {
        self.shard = None;
        let pairs = self.cutter.pairs();
        let cutter = std::mem::replace(&mut self.cutter, TaskCutter::new(self.job_id, self.spec));
        self.ready.extend(cutter.finish());
        self.write().await?;
        Ok(pairs)
    }
}

/// Writes task objects, several at a time.
pub async fn write_tasks(blobs: &Blobs, job_id: &str, tasks: Vec<Task>) -> Result<()> {
    use futures::StreamExt;
    futures::stream::iter(tasks)
        .map(|t| async move {
            blobs
                .put(&jobs::task_key(job_id, &t.task_id), t.encode_to_vec())
                .await
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()?;
    Ok(())
}

/// One group's pairs not yet spilled, and how many objects it has spilled.
#[derive(Debug, Default)]
struct SpillGroup {
    buffer: Vec<u8>,
    objects: u32,
}

/// The pairs of a streamed submit, grouped by the shard of their document as they arrive:
/// each group buffers its pairs (position in the job, then the pair, length-delimited) and
/// the largest groups are written to the job's spill prefix whenever the buffers pass the
/// budget. [`Spill::cut`] then cuts the tasks group by group and deletes the spilled objects.
pub struct Spill<'s> {
    planner: &'s Planner<'s>,
    job_id: &'s str,
    spec: &'s JobSpec,
    keys: Vec<String>,
    ids: IdMap,
    groups: BTreeMap<Group, SpillGroup>,
    buffered: usize,
    pairs: u64,
}

impl<'s> Spill<'s> {
    /// Pairs taken so far.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// Takes the next pair: checks it, finds its shard, and buffers it.
    pub async fn push(&mut self, pair: PairInput) -> Result<()> {
        let i = self.pairs;
        let group = group_of(i, &pair, &self.ids, self.spec)?;
        let buffer = &mut self.groups.entry(group).or_default().buffer;
        let before = buffer.len();
        prost::encoding::encode_varint(i, buffer);
        pair.encode_length_delimited(buffer)
            .map_err(|e| CoordinatorError::Invalid(format!("{}: {e}", pair_name(i, &pair))))?;
        self.buffered += buffer.len() - before;
        self.pairs += 1;
        if self.buffered > self.planner.spill_budget {
            self.flush_largest().await?;
        }
        Ok(())
    }

    /// Writes the largest buffers until at most half the budget is buffered.
    async fn flush_largest(&mut self) -> Result<()> {
        let mut sizes: Vec<(usize, Group)> = self
            .groups
            .iter()
            .map(|(g, s)| (s.buffer.len(), *g))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for (_, group) in sizes {
            if self.buffered <= self.planner.spill_budget / 2 {
                break;
            }
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let data = std::mem::take(&mut g.buffer);
            let key = jobs::spill_key(self.job_id, group, g.objects);
            g.objects += 1;
            self.buffered -= data.len();
            self.planner.blobs.put(&key, data).await?;
        }
        Ok(())
    }

    /// Cuts the tasks over the groups in order, reading each group's spilled pairs back, and
    /// writes them; deletes the spilled objects (whatever happens); returns the pairs.
    pub async fn cut(self) -> Result<u64> {
        let planner = self.planner;
        let job_id = self.job_id;
        let cut = self.cut_groups().await;
        let cleaned = planner
            .blobs
            .delete_prefix(&jobs::spill_prefix(job_id))
            .await;
        let pairs = cut?;
        cleaned?;
        Ok(pairs)
    }

    async fn cut_groups(self) -> Result<u64> {
        let mut cut = Cut::new(self.planner, self.job_id, self.spec, &self.keys);
        for (group, spilled) in &self.groups {
            for seq in 0..spilled.objects {
                let key = jobs::spill_key(self.job_id, *group, seq);
                let data = self.planner.blobs.get(&key).await?.ok_or_else(|| {
                    CoordinatorError::DataLoss(format!("spilled pairs `{key}` are gone"))
                })?;
                cut_records(&mut cut, *group, &data, &key).await?;
            }
            cut_records(&mut cut, *group, &spilled.buffer, "the buffer").await?;
        }
        cut.finish().await
    }
}

/// Takes every (position, pair) record of one spilled buffer, in order.
async fn cut_records(
    cut: &mut Cut<'_, '_>,
    group: Group,
    mut data: &[u8],
    what: &str,
) -> Result<()> {
    let corrupt =
        |e: prost::DecodeError| CoordinatorError::DataLoss(format!("spilled pairs in {what}: {e}"));
    while !data.is_empty() {
        let i = prost::encoding::decode_varint(&mut data).map_err(corrupt)?;
        let pair = PairInput::decode_length_delimited(&mut data).map_err(corrupt)?;
        cut.push(group, i, pair).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::{model_ref, CorpusChunk, ModelRef};
    use std::collections::HashSet;

    struct Store {
        _dir: tempfile::TempDir,
        blobs: Blobs,
        rt: tokio::runtime::Runtime,
    }

    fn store() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Store {
            _dir: dir,
            blobs,
            rt,
        }
    }

    fn body_of(id: &str) -> String {
        format!("body of {id}")
    }

    /// Writes corpus `c` as `shards` shards of `per` documents `d0`, `d1`, ...
    fn write_corpus(s: &Store, shards: usize, per: usize) {
        for shard in 0..shards {
            let documents = (0..per)
                .map(|k| {
                    let id = format!("d{}", shard * per + k);
                    Document {
                        body: body_of(&id),
                        id,
                        ..Default::default()
                    }
                })
                .collect();
            let chunk = CorpusChunk {
                corpus_name: "c".into(),
                documents,
            };
            let key = jobs::corpus_shard_key("c", shard);
            s.rt.block_on(s.blobs.put(&key, chunk.encode_to_vec()))
                .unwrap();
        }
    }

    /// `n` pairs over documents `d0..d{docs}` in a scattered order; every 10th inlines its
    /// document.
    fn pairs(n: usize, docs: usize) -> Vec<PairInput> {
        (0..n)
            .map(|i| {
                let id = format!("d{}", (i * 7919 + 13) % docs);
                let document = if i % 10 == 3 {
                    pair_input::Document::Inline(Document {
                        body: format!("inline {i}"),
                        id: format!("x{i}"),
                        ..Default::default()
                    })
                } else {
                    pair_input::Document::DocId(id)
                };
                PairInput {
                    pair_id: format!("p{i}"),
                    query: format!("q{i}"),
                    document: Some(document),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn label_spec(pairs: Vec<PairInput>, task_size: u32) -> JobSpec {
        JobSpec {
            corpus_id: "c".into(),
            student: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath("m".into())),
            }),
            label_pairs: pairs,
            task_size,
            ..Default::default()
        }
    }

    fn tasks_of(s: &Store, job: &str) -> Vec<Task> {
        let keys =
            s.rt.block_on(s.blobs.list(&jobs::tasks_prefix(job)))
                .unwrap();
        keys.iter()
            .map(|k| Task::decode(s.rt.block_on(s.blobs.get(k)).unwrap().unwrap()).unwrap())
            .collect()
    }

    /// Every pair once, with its exact document; tasks uniform; inline pairs first in input
    /// order, then the shards in order, input order within a shard.
    fn check_plan(tasks: &[Task], input: &[PairInput], size: usize, per: usize) {
        let sizes: Vec<usize> = tasks.iter().map(|t| t.pairs.len()).collect();
        assert_eq!(tasks.len(), input.len().div_ceil(size));
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n == size),
            "{sizes:?}"
        );
        let by_id: HashMap<&str, (usize, &PairInput)> = input
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pair_id.as_str(), (i, p)))
            .collect();
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for p in tasks.iter().flat_map(|t| &t.pairs) {
            assert!(seen.insert(p.pair_id.clone()), "{} twice", p.pair_id);
            let (i, given) = by_id[p.pair_id.as_str()];
            let Some(pair_input::Document::Inline(doc)) = &p.document else {
                panic!("{} not inlined", p.pair_id);
            };
            let group = match &given.document {
                Some(pair_input::Document::DocId(id)) => {
                    assert_eq!((&doc.id, &doc.body), (id, &body_of(id)));
                    id[1..].parse::<usize>().unwrap() / per + 1
                }
                other => {
                    assert_eq!(&p.document, other);
                    0
                }
            };
            keys.push((group, i));
        }
        assert_eq!(seen.len(), input.len());
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "shard order, then input order"
        );
    }

    #[test]
    fn pairs_are_cut_in_shard_order_with_one_shard_in_memory() {
        let s = store();
        write_corpus(&s, 6, 40);
        let spec = label_spec(pairs(500, 240), 16);
        let planner = Planner::new(&s.blobs);
        let n = s.rt.block_on(planner.plan_labeling("j", &spec)).unwrap();
        assert_eq!(n, 500);
        check_plan(&tasks_of(&s, "j"), &spec.label_pairs, 16, 40);
        assert!(planner.stats().peak() <= 2, "{}", planner.stats().peak());
        // One pass for the ids, then each shard once.
        assert_eq!(planner.stats().reads(), 12);
    }

    #[test]
    fn an_unknown_id_is_named_and_nothing_is_written() {
        let s = store();
        write_corpus(&s, 3, 10);
        let mut input = pairs(50, 30);
        input[42].document = Some(pair_input::Document::DocId("d30".into()));
        let spec = label_spec(input, 8);
        let err =
            s.rt.block_on(Planner::new(&s.blobs).plan_labeling("j", &spec))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("spec.label_pairs[42] (pair `p42`).doc_id: `d30` is not in corpus `c`"),
            "{err}"
        );
        assert!(tasks_of(&s, "j").is_empty());
        let err =
            s.rt.block_on(Planner::new(&s.blobs).plan_labeling(
                "j",
                &JobSpec {
                    corpus_id: "other".into(),
                    ..spec
                },
            ))
            .unwrap_err()
            .to_string();
        assert!(err.contains("corpus_id `other`: no such corpus"), "{err}");
    }

    #[test]
    fn a_streamed_job_spills_by_shard_and_leaves_no_spill_behind() {
        let s = store();
        write_corpus(&s, 6, 40);
        let input = pairs(500, 240);
        let spec = label_spec(Vec::new(), 16);
        let planner = Planner::new(&s.blobs).with_spill_budget(2_000);
        let pairs = s.rt.block_on(async {
            let mut spill = planner.spill("j", &spec).await.unwrap();
            for p in input.clone() {
                spill.push(p).await.unwrap();
            }
            let spilled = s.blobs.list(&jobs::spill_prefix("j")).await.unwrap();
            assert!(spilled.len() > 10, "{}", spilled.len());
            assert!(spill.buffered <= 2_000);
            spill.cut().await.unwrap()
        });
        assert_eq!(pairs, 500);
        let streamed = tasks_of(&s, "j");
        check_plan(&streamed, &input, 16, 40);
        assert!(planner.stats().peak() <= 2);
        let left =
            s.rt.block_on(s.blobs.list(&jobs::spill_prefix("j")))
                .unwrap();
        assert!(left.is_empty(), "{left:?}");
        // The same tasks as from the pairs in the spec.
        let whole = label_spec(input.clone(), 16);
        s.rt.block_on(Planner::new(&s.blobs).plan_labeling("k", &whole))
            .unwrap();
        let pairs_of = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.pairs).collect::<Vec<_>>();
        assert_eq!(pairs_of(streamed), pairs_of(tasks_of(&s, "k")));
    }

    #[test]
    fn a_duplicate_pair_id_within_a_streamed_task_is_named() {
        let s = store();
        write_corpus(&s, 2, 10);
        let spec = label_spec(Vec::new(), 4);
        let planner = Planner::new(&s.blobs);
        let err = s.rt.block_on(async {
            let mut spill = planner.spill("j", &spec).await.unwrap();
            for (i, doc) in ["d1", "d15", "d2"].into_iter().enumerate() {
                let pair_id = if i == 2 {
                    "a".to_string()
                } else {
                    format!("p{i}")
                };
                let pair_id = if i == 0 { "a".to_string() } else { pair_id };
                spill
                    .push(PairInput {
                        pair_id,
                        query: "q".into(),
                        document: Some(pair_input::Document::DocId(doc.into())),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            spill.cut().await.unwrap_err().to_string()
        });
        assert!(
            err.contains("spec.label_pairs[2] (pair `a`).pair_id: duplicate"),
            "{err}"
        );
        assert!(s
            .rt
            .block_on(s.blobs.list(&jobs::spill_prefix("j")))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn synthesis_samples_the_same_seeds_reading_only_their_shards() {
        let s = store();
        write_corpus(&s, 12, 1_000);
        let spec = JobSpec {
            corpus_id: "c".into(),
            seed_documents: 20,
            task_size: 4,
            seed: 3,
            ..Default::default()
        };
        let planner = Planner::new(&s.blobs);
        let tasks = s.rt.block_on(planner.plan_synthesis("j", &spec)).unwrap();
        let ids: Vec<&str> = tasks
            .iter()
            .flat_map(|t| t.documents.iter().map(|d| d.id.as_str()))
            .collect();
        // The sample the coordinator drew before it planned shard by shard (same spec).
        let before = [
            "d10579", "d11025", "d1200", "d2397", "d2728", "d2836", "d3187", "d3235", "d4782",
            "d5199", "d5602", "d5864", "d6132", "d6259", "d6712", "d7271", "d7319", "d7357",
            "d9014", "d9272",
        ];
        assert_eq!(ids, before);
        assert!(tasks
            .iter()
            .flat_map(|t| &t.documents)
            .all(|d| d.body == body_of(&d.id)));
        // 12 shards for the ids, then the 10 that hold a seed.
        assert_eq!(planner.stats().reads(), 22);
        assert!(planner.stats().peak() <= 2);
        let corpus: HashMap<String, Document> = (0..12_000)
            .map(|i| {
                let id = format!("d{i}");
                (
                    id.clone(),
                    Document {
                        body: body_of(&id),
                        id,
                        ..Default::default()
                    },
                )
            })
            .collect();
        assert_eq!(
            tasks,
            jobs::plan_synthesis_tasks("j", &spec, &corpus).unwrap()
        );
    }

    #[test]
    fn colliding_hashes_still_find_every_id() {
        let mut map = IdMap::default();
        map.insert_hashed(7, "a", 0);
        map.insert_hashed(7, "b", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.shard_of_hashed(7, "a"), Some(0));
        assert_eq!(map.shard_of_hashed(7, "b"), Some(3));
        // An id not in the corpus may map to a shard; the shard then lacks it, and the pair
        // is refused as not in the corpus.
        assert_eq!(map.shard_of_hashed(7, "c"), Some(0));
        assert_eq!(map.shard_of_hashed(8, "c"), None);
    }
}
