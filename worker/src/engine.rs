//! The worker's side of the engine: a task becomes a request to the engine thread of the
//! engine crate (`labelfleet_slm::host`), which owns the models; its answer becomes the task's
//! labels or queries. Here live the task's model (a local folder or a pushed checkpoint; a
//! committee's judges run in `committee`) and the proto-to-engine conversions of pairs and seed
//! documents.

use crate::committee::Corpora;
use labelfleet_cluster::blobs::Blobs;
use labelfleet_proto::v1::{
    model_ref, pair_input, ApiUsage, Label, QueryHits, SyntheticQuery, Task, TaskKind,
};
use labelfleet_slm::grading::{GradePrompt, Grading, Pair};
use labelfleet_slm::host::{EngineFailure, EngineThread, GradeRequest, SynthesisRequest};
use labelfleet_slm::querygen::SeedDocument;
use labelfleet_slm::Placement;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// Default input length when a task does not set one.
pub const DEFAULT_MAX_TOKENS: usize = 512;
/// Pairs of the warm-up batch, of growing length.
const WARM_UP_PAIRS: usize = 8;

/// What running a task came to.
#[derive(Debug)]
pub enum Outcome {
    /// Labels of a grading task, queries of a synthesis task, or hits of a search task; and
    /// what an API teacher spent on them (None for a local model).
    Done {
        labels: Vec<Label>,
        queries: Vec<SyntheticQuery>,
        hits: Vec<QueryHits>,
        seconds: f64,
        api_usage: Option<ApiUsage>,
    },
    /// `retryable` false: the input itself is bad, another attempt would fail the same way.
    Failed { reason: String, retryable: bool },
}

/// Handle to the engine thread, with where the tasks' models come from.
#[derive(Clone)]
pub struct Engine {
    pub(crate) thread: EngineThread,
    pub(crate) sources: ModelSources,
    /// Where a committee's similarity judges read their corpora (None: no object store).
    pub(crate) corpora: Option<Arc<Corpora>>,
    /// Pairs graded since start (for metrics).
    pub pairs: Arc<AtomicU64>,
}

/// Where models come from.
#[derive(Debug, Clone)]
pub struct ModelSources {
    /// Folder holding pushed checkpoints, one sub-folder per checkpoint id.
    pub checkpoints: PathBuf,
    /// Folders a task's local model (`local_path`) must be inside, once symlinks and `..` are
    /// resolved ([`default_model_roots`] unless configured). The checkpoint folder is always
    /// one.
    pub model_roots: Vec<PathBuf>,
}

/// The model roots of a worker not told otherwise: the models `scripts/setup.sh` installs
/// (`$LABELFLEET_HOME/models`, where the short names `smollm2` and `minilm` resolve).
pub fn default_model_roots() -> Vec<PathBuf> {
    vec![labelfleet_slm::home_dir().join("models")]
}

/// Why a task's model cannot be used here, and whether another attempt may find it.
#[derive(Debug, PartialEq)]
pub struct ModelRefused {
    pub reason: String,
    pub retryable: bool,
}

impl ModelRefused {
    fn transient(reason: String) -> Self {
        ModelRefused {
            reason,
            retryable: true,
        }
    }
    fn for_good(reason: String) -> Self {
        ModelRefused {
            reason,
            retryable: false,
        }
    }
}

fn failed(f: EngineFailure) -> Outcome {
    Outcome::Failed {
        reason: f.reason,
        retryable: f.retryable,
    }
}

impl Engine {
    /// Starts the engine thread. `threads` caps libtorch's intra-op threads (0: its default);
    /// `store` is where a committee's similarity judges read their corpora.
    pub fn start(
        placement: Placement,
        threads: usize,
        sources: ModelSources,
        store: Option<Blobs>,
    ) -> std::io::Result<Engine> {
        let thread = EngineThread::start(placement, threads)?;
        let pairs = thread.pairs.clone();
        Ok(Engine {
            thread,
            sources,
            corpora: store.map(|b| Arc::new(Corpora::new(b))),
            pairs,
        })
    }

    /// Loads `model` (a bundled name or a folder inside the model roots) and grades one batch
    /// of warm-up pairs with it, so the first task finds it loaded and its kernels warm. The
    /// engine keeps the model. Returns the pairs graded.
    pub async fn warm_up(&self, model: &str) -> Result<usize, String> {
        let dir = labelfleet_slm::resolve_model(model);
        let roots = std::iter::once(&self.sources.checkpoints).chain(&self.sources.model_roots);
        confine(&dir, roots).map_err(|roots| {
            format!(
                "warm-up model `{model}` ({}): outside this worker's model roots ({roots})",
                dir.display()
            )
        })?;
        let pairs: Vec<Pair> = (0..WARM_UP_PAIRS)
            .map(|i| Pair {
                id: format!("warm-up-{i}"),
                query: "quarterly revenue report".into(),
                title: Some(format!("Report {i}")),
                body: "Revenue grew in the third quarter; costs stayed flat. ".repeat(1 + i * 4),
                metadata: Default::default(),
            })
            .collect();
        let graded = self
            .thread
            .grade(GradeRequest {
                model: dir,
                prompt: GradePrompt::default(),
                grade_labels: vec![],
                max_len: DEFAULT_MAX_TOKENS,
                pairs,
            })
            .await
            .map_err(|f| format!("warm-up of `{model}`: {}", f.reason))?;
        Ok(graded.gradings.len())
    }

    /// Runs a grading or query-synthesis task on the engine thread.
    pub async fn run(&self, task: Task) -> Outcome {
        let start = Instant::now();
        let max_len = match task.max_tokens {
            0 => DEFAULT_MAX_TOKENS,
            n => n as usize,
        };
        // a committee grades; a synthesis task naming one is refused by `model_dir` below
        if let (Some(model_ref::Source::Committee(c)), false) = (
            task.model.as_ref().and_then(|m| m.source.as_ref()),
            task.kind == TaskKind::SynthesizeQueries as i32,
        ) {
            return crate::committee::grade(self, &task, c, max_len).await;
        }
        let (model, checkpoint_id) = match model_dir(&self.sources, &task) {
            Ok(d) => d,
            Err(ModelRefused { reason, retryable }) => {
                return Outcome::Failed { reason, retryable }
            }
        };
        if task.kind == TaskKind::SynthesizeQueries as i32 {
            self.synthesize(&task, model, max_len, start).await
        } else {
            self.grade(&task, model, checkpoint_id, max_len, start)
                .await
        }
    }

    async fn synthesize(
        &self,
        task: &Task,
        model: PathBuf,
        max_len: usize,
        start: Instant,
    ) -> Outcome {
        let req = SynthesisRequest {
            model,
            max_len,
            seeds: task.documents.iter().map(to_seed).collect(),
            queries_per_document: task.queries_per_document.max(1) as usize,
            metadata_queries_per_document: task.metadata_queries_per_document as usize,
            seed: task.seed,
        };
        let generated = match self.thread.synthesize(req).await {
            Ok(g) => g,
            Err(f) => return failed(f),
        };
        let mut per_doc_count: HashMap<String, usize> = HashMap::new();
        let queries = generated
            .into_iter()
            .map(|g| {
                let n = per_doc_count.entry(g.doc_id.clone()).or_insert(0);
                *n += 1;
                SyntheticQuery {
                    query_id: format!("{}-q{}", g.doc_id, n),
                    doc_id: g.doc_id,
                    text: g.query,
                    prompt_version: g.prompt_version,
                    metadata_field: g.metadata_field.unwrap_or_default(),
                }
            })
            .collect();
        Outcome::Done {
            labels: Vec::new(),
            queries,
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: None,
        }
    }

    async fn grade(
        &self,
        task: &Task,
        model: PathBuf,
        checkpoint_id: String,
        max_len: usize,
        start: Instant,
    ) -> Outcome {
        let (prompt, pairs) = match grading_input(task) {
            Ok(input) => input,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    retryable: false,
                }
            }
        };
        let req = GradeRequest {
            model,
            prompt,
            grade_labels: task.grade_labels.clone(),
            max_len,
            pairs,
        };
        let graded = match self.thread.grade(req).await {
            Ok(g) => g,
            Err(f) => return failed(f),
        };
        let prompt_version = prompt.version().to_string();
        let labels = task
            .pairs
            .iter()
            .zip(graded.gradings)
            .map(|(p, g)| label(p, g, &graded.model, &checkpoint_id, &prompt_version))
            .collect();
        Outcome::Done {
            labels,
            queries: Vec::new(),
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: None,
        }
    }
}

/// A grading task's prompt and pairs, or why they are bad (the field named): another attempt
/// would fail the same way.
pub(crate) fn grading_input(task: &Task) -> Result<(GradePrompt, Vec<Pair>), String> {
    let prompt =
        GradePrompt::parse(&task.prompt_version).map_err(|e| format!("prompt_version: {e}"))?;
    let pairs = task
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| to_pair(p).map_err(|field| format!("pair `{}` (#{i}): {field}", p.pair_id)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prompt, pairs))
}

/// A local model's folder (a bundled name or a path), which must be inside the model roots.
pub(crate) fn local_model(sources: &ModelSources, p: &str) -> Result<PathBuf, ModelRefused> {
    let dir = labelfleet_slm::resolve_model(p);
    let roots = std::iter::once(&sources.checkpoints).chain(&sources.model_roots);
    confine(&dir, roots).map_err(|roots| {
        ModelRefused::for_good(format!(
            "model `{p}` ({}): outside this worker's model roots ({roots}); see --model-root",
            dir.display()
        ))
    })?;
    Ok(dir)
}

/// The folder of the task's model, and the checkpoint id when it is one. A local model must
/// be inside the model roots, a checkpoint inside the checkpoint folder.
fn model_dir(sources: &ModelSources, task: &Task) -> Result<(PathBuf, String), ModelRefused> {
    match task.model.as_ref().and_then(|m| m.source.as_ref()) {
        Some(model_ref::Source::LocalPath(p)) => Ok((local_model(sources, p)?, String::new())),
        Some(model_ref::Source::CheckpointId(id)) => {
            let dir = checkpoint_dir(&sources.checkpoints, id).map_err(ModelRefused::for_good)?;
            if !dir.join("config.json").is_file() {
                return Err(ModelRefused::transient(format!(
                    "checkpoint `{id}` is not on this worker yet (no {})",
                    dir.display()
                )));
            }
            confine(&dir, [&sources.checkpoints]).map_err(|_| {
                ModelRefused::for_good(format!(
                    "checkpoint `{id}`: {} leads outside the checkpoint folder",
                    dir.display()
                ))
            })?;
            Ok((dir, id.clone()))
        }
        Some(model_ref::Source::Openai(_)) => Err(ModelRefused::transient(
            "an OpenAI endpoint runs on the worker's API teacher, not the engine".into(),
        )),
        Some(model_ref::Source::Committee(_)) => Err(ModelRefused::for_good(
            "a committee is not one model: its judges run one by one".into(),
        )),
        None => Err(ModelRefused::for_good("task names no model".into())),
    }
}

/// `path` made absolute and with `.` and `..` resolved by name (symlinks are not followed).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks that `path` is inside one of `roots`: by its real path (symlinks resolved) when it
/// exists, else by name (`..` resolved), so that a model missing here now may still be
/// installed under a root later. The error lists the roots.
pub fn confine<'a>(
    path: &Path,
    roots: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<(), String> {
    let roots: Vec<&PathBuf> = roots.into_iter().collect();
    let inside = match path.canonicalize() {
        Ok(real) => roots
            .iter()
            .any(|r| r.canonicalize().is_ok_and(|r| real.starts_with(r))),
        Err(_) => {
            let named = lexical(path);
            roots.iter().any(|r| {
                named.starts_with(lexical(r))
                    || r.canonicalize().is_ok_and(|r| named.starts_with(r))
            })
        }
    };
    if inside {
        return Ok(());
    }
    Err(roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

/// The folder of checkpoint `id`; the id must be a plain name.
pub fn checkpoint_dir(root: &Path, id: &str) -> Result<PathBuf, String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(format!(
            "checkpoint id `{id}`: only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    Ok(root.join(id))
}

/// A pair's label: its grade and what gave it (model, checkpoint, prompt version).
pub(crate) fn label(
    p: &labelfleet_proto::v1::PairInput,
    g: Grading,
    model: &str,
    checkpoint_id: &str,
    prompt_version: &str,
) -> Label {
    Label {
        pair_id: p.pair_id.clone(),
        query_id: p.query_id.clone(),
        doc_id: doc_id(p),
        grade: g.grade as u32,
        expected_grade: g.expected,
        distribution: g.distribution,
        model: model.to_string(),
        checkpoint_id: checkpoint_id.to_string(),
        prompt_version: prompt_version.to_string(),
        judges: Vec::new(),
    }
}

fn doc_id(p: &labelfleet_proto::v1::PairInput) -> String {
    match &p.document {
        Some(pair_input::Document::DocId(id)) => id.clone(),
        Some(pair_input::Document::Inline(d)) => d.id.clone(),
        None => String::new(),
    }
}

/// The generator's view of a seed document.
pub(crate) fn to_seed(d: &labelfleet_proto::v1::Document) -> SeedDocument {
    let mut metadata = BTreeMap::new();
    if !d.author.is_empty() {
        metadata.insert("author".to_string(), d.author.clone());
    }
    if !d.path.is_empty() {
        metadata.insert("path".to_string(), d.path.clone());
    }
    for (k, v) in &d.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    SeedDocument {
        id: d.id.clone(),
        title: (!d.title.is_empty()).then(|| d.title.clone()),
        body: d.body.clone(),
        metadata,
    }
}

/// The engine's view of a pair; the error names the field.
pub(crate) fn to_pair(p: &labelfleet_proto::v1::PairInput) -> Result<Pair, String> {
    let Some(pair_input::Document::Inline(d)) = &p.document else {
        return Err("document: not inlined by the coordinator".into());
    };
    Ok(document_pair(p.pair_id.clone(), &p.query, d))
}

/// A document paired with a query, as the engine reads it.
pub(crate) fn document_pair(id: String, query: &str, d: &labelfleet_proto::v1::Document) -> Pair {
    let mut metadata = BTreeMap::new();
    if !d.author.is_empty() {
        metadata.insert("author".to_string(), d.author.clone());
    }
    if !d.path.is_empty() {
        metadata.insert("path".to_string(), d.path.clone());
    }
    if !d.modified.is_empty() {
        metadata.insert("modified".to_string(), d.modified.clone());
    }
    for (k, v) in &d.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    Pair {
        id,
        query: query.to_string(),
        title: (!d.title.is_empty()).then(|| d.title.clone()),
        body: d.body.clone(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::ModelRef;

    fn task(source: model_ref::Source) -> Task {
        Task {
            model: Some(ModelRef {
                source: Some(source),
            }),
            ..Default::default()
        }
    }

    fn local(p: &Path) -> Task {
        task(model_ref::Source::LocalPath(p.display().to_string()))
    }

    /// A folder with a root of models (one model in it), a checkpoint folder, and a model
    /// outside both.
    struct Layout {
        _dir: tempfile::TempDir,
        sources: ModelSources,
        model: PathBuf,
        outside: PathBuf,
    }

    fn layout() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        let model = root.join("m");
        let outside = dir.path().join("elsewhere/m");
        for d in [&model, &outside] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("config.json"), b"{}").unwrap();
        }
        let checkpoints = dir.path().join("checkpoints");
        std::fs::create_dir_all(&checkpoints).unwrap();
        Layout {
            sources: ModelSources {
                checkpoints,
                model_roots: vec![root],
            },
            model,
            outside,
            _dir: dir,
        }
    }

    fn refused(sources: &ModelSources, task: &Task) -> ModelRefused {
        model_dir(sources, task).expect_err("refused")
    }

    #[test]
    fn a_model_inside_a_root_is_used_as_named() {
        let l = layout();
        assert_eq!(
            model_dir(&l.sources, &local(&l.model)),
            Ok((l.model.clone(), String::new()))
        );
        // one missing now, but under a root, is left to the engine (it may be installed later)
        let missing = l.sources.model_roots[0].join("not-yet");
        assert_eq!(
            model_dir(&l.sources, &local(&missing)),
            Ok((missing, String::new()))
        );
    }

    #[test]
    fn a_model_outside_the_roots_is_refused_for_good() {
        let l = layout();
        let root = &l.sources.model_roots[0];
        let link = root.join("link");
        std::os::unix::fs::symlink(l.outside.parent().unwrap(), &link).unwrap();
        for path in [
            l.outside.clone(),
            root.join("../elsewhere/m"),
            root.join("m/../../elsewhere/m"),
            link.join("m"),
            root.join("../nowhere"),
            PathBuf::from("/etc"),
        ] {
            let r = refused(&l.sources, &local(&path));
            assert!(!r.retryable, "{path:?}: {r:?}");
            assert!(
                r.reason.contains("outside this worker's model roots")
                    && r.reason.contains(&path.display().to_string())
                    && r.reason.contains(&root.display().to_string()),
                "{path:?}: {}",
                r.reason
            );
        }
    }

    #[test]
    fn the_default_roots_hold_the_bundled_models() {
        let sources = ModelSources {
            checkpoints: std::env::temp_dir().join("labelfleet-no-checkpoints"),
            model_roots: default_model_roots(),
        };
        for name in ["smollm2", "minilm"] {
            let t = task(model_ref::Source::LocalPath(name.into()));
            assert_eq!(
                model_dir(&sources, &t).map(|(d, _)| d),
                Ok(labelfleet_slm::resolve_model(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn checkpoints_are_read_from_the_checkpoint_folder_only() {
        let l = layout();
        let ckpt = |id: &str| task(model_ref::Source::CheckpointId(id.into()));
        let installed = l.sources.checkpoints.join("ckpt-a");
        std::fs::create_dir_all(&installed).unwrap();
        std::fs::write(installed.join("config.json"), b"{}").unwrap();
        assert_eq!(
            model_dir(&l.sources, &ckpt("ckpt-a")),
            Ok((installed, "ckpt-a".to_string()))
        );
        // not pushed yet: another worker (or a later attempt) may have it
        assert!(refused(&l.sources, &ckpt("ckpt-b")).retryable);
        // a name that is not a plain id never will be
        assert!(!refused(&l.sources, &ckpt("../models/m")).retryable);
        // a checkpoint folder that is a link out of the checkpoint folder is refused
        std::os::unix::fs::symlink(l.outside.clone(), l.sources.checkpoints.join("ckpt-c"))
            .unwrap();
        let r = refused(&l.sources, &ckpt("ckpt-c"));
        assert!(
            !r.retryable && r.reason.contains("outside the checkpoint folder"),
            "{r:?}"
        );
    }
}
