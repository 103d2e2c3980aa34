//! `score --similarity-corpus`: grading by the sentence encoder's similarity, with
//! pseudo-relevance feedback from and calibration against a corpus (`labelfleet_slm::similarity`).

use crate::{jsonl, progress, ScoreArgs, ScoredPair, ScoringSummary};
use anyhow::{Context, Result};
use clap::Args;
use labelfleet_slm::similarity::{
    Calibration, DenseIndex, Feedback, SentenceEncoder, SimilarityJudge,
};
use labelfleet_slm::Pair;
use labelfleet_types::pair::document_text;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SimilarityArgs {
    /// Grade by the similarity of a sentence encoder (`--model minilm`) instead of a grader:
    /// the query moves toward its top documents of this corpus (pseudo-relevance feedback), and
    /// each pair's cosine is graded by where it stands among the corpus's (a JSONL file or a
    /// folder, as `run --corpus`).
    #[arg(long = "similarity-corpus")]
    pub corpus: Option<PathBuf>,
    /// Feedback documents per query (0: the plain cosine).
    #[arg(long, default_value_t = Feedback::default().depth)]
    pub feedback_depth: usize,
    /// How far the query moves toward their mean.
    #[arg(long, default_value_t = Feedback::default().weight)]
    pub feedback_weight: f64,
}

impl SimilarityArgs {
    fn feedback(&self) -> Result<Feedback> {
        if !(self.feedback_weight.is_finite() && self.feedback_weight >= 0.0) {
            anyhow::bail!(
                "--feedback-weight {}: must be a finite number, 0 or more",
                self.feedback_weight
            );
        }
        Ok(Feedback {
            depth: self.feedback_depth,
            weight: self.feedback_weight,
        })
    }
}

/// The corpus documents' texts, written as a pair's document is.
fn corpus_texts(path: &Path) -> Result<Vec<String>> {
    let docs = crate::label::read_corpus(path)
        .with_context(|| format!("reading the similarity corpus {}", path.display()))?;
    Ok(docs
        .iter()
        .map(|d| document_text(&labelfleet_pipeline::stages::pair_for(d.id.clone(), "", d)))
        .collect())
}

fn load_judge(a: &ScoreArgs, corpus: &Path) -> Result<SimilarityJudge> {
    let feedback = a.similarity.feedback()?;
    let placement = a.engine.placement()?;
    let dir = labelfleet_slm::resolve_model(&a.engine.model);
    let encoder = SentenceEncoder::load(&dir, placement, a.engine.max_len)
        .with_context(|| format!("loading sentence encoder {}", dir.display()))?;
    let texts = corpus_texts(corpus)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pb = progress::bar(refs.len() as u64, "embedding the corpus");
    let index = DenseIndex::build(
        &encoder,
        &refs,
        a.engine.batch_options(placement),
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish();
    Ok(SimilarityJudge::new(
        encoder,
        index,
        feedback,
        Calibration::default(),
    )?)
}

pub fn score(a: &ScoreArgs) -> Result<()> {
    let corpus = a
        .similarity
        .corpus
        .as_deref()
        .expect("called with --similarity-corpus");
    let judge = load_judge(a, corpus)?;
    let model = judge.describe();
    tracing::info!(%model, "similarity judge ready");
    let mut rejects = a.rejects_writer()?;
    let mut rejected = 0;
    let accepted = a.read_pairs(&mut rejects, &mut rejected, |p| judge.check_pair(p))?;
    let pairs: Vec<Pair> = accepted.pairs;
    let placement = a.engine.placement()?;
    let pb = progress::bar(
        judge.texts_to_embed(&pairs) as u64,
        "embedding queries and documents",
    );
    let start = std::time::Instant::now();
    let judged = judge.judge(&pairs, a.engine.batch_options(placement), &mut |n| {
        pb.inc(n as u64)
    })?;
    pb.finish();
    let secs = start.elapsed().as_secs_f64();
    let mut out = jsonl::Writer::create(&a.output)?;
    for (p, j) in pairs.iter().zip(&judged) {
        out.write(&ScoredPair {
            id: &p.id,
            grade: j.grading.grade,
            expected: j.grading.expected,
            distribution: &j.grading.distribution,
            truncated: false,
            model: &model,
            prompt_version: "",
            grade_source: None,
            similarity: Some(j.similarity),
            z: Some(j.z),
        })?;
    }
    crate::finish_scoring(
        out,
        rejects,
        &ScoringSummary {
            model: &model,
            placement,
            graded: judged.iter().map(|j| j.grading.grade).collect(),
            num_grades: judge.num_grades(),
            rejected,
            seconds: secs,
        },
    )
}
