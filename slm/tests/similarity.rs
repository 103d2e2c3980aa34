//! The similarity judge: MiniLM sentence embeddings against sentence-transformers, and the
//! judge's feedback and calibration on a small corpus.

mod common;

use common::{max_abs_diff, model_dir, reference};
use labelfleet_slm::grading::BatchOptions;
use labelfleet_slm::similarity::{
    Calibration, DenseIndex, Feedback, SentenceEncoder, SimilarityJudge,
};
use labelfleet_slm::{Pair, Placement};

fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(&model_dir("minilm"), Placement::cpu(), 512).expect("load MiniLM")
}

fn small_batches() -> BatchOptions {
    // several batches of mixed lengths, so the input order must be put back
    BatchOptions {
        token_budget: 300,
        max_batch: 2,
    }
}

#[test]
fn minilm_sentence_embeddings_match_sentence_transformers() {
    let (tensors, meta) = reference("minilm");
    let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).unwrap();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let mut embedded = 0;
    let got = encoder()
        .embed(&texts, small_batches(), &mut |n| embedded += n)
        .unwrap();
    assert_eq!(embedded, texts.len());
    let want = &tensors["sentences"];
    assert_eq!(got.size(), want.size());
    let diff = max_abs_diff(&got, want);
    println!("max |embedding diff| = {diff:.2e}");
    // the last text is over 256 tokens: a wrong cut would differ by far more than this
    assert!(diff < 1e-5, "max |diff| {diff}");
}

fn pair(id: &str, query: &str, body: &str) -> Pair {
    Pair {
        id: id.into(),
        query: query.into(),
        title: None,
        body: body.into(),
        metadata: Default::default(),
    }
}

const CORPUS: &[&str] = &[
    "The boundary layer on a flat plate becomes turbulent at high Reynolds numbers.",
    "Transition of the boundary layer at supersonic Mach numbers was measured in a wind tunnel.",
    "Heat transfer to a blunt body in hypersonic flow depends on the nose radius.",
    "The company's vacation policy gives contractors no paid leave.",
    "Expense reports are due on the fifth working day of each month.",
    "Quarterly revenue in the EMEA region rose by eight percent.",
    "The cafeteria menu changes every Monday.",
    "Flutter of a swept wing was studied with a flexible model.",
];

fn judge(feedback: Feedback) -> SimilarityJudge {
    let encoder = encoder();
    let index = DenseIndex::build(&encoder, CORPUS, small_batches(), &mut |_| {}).unwrap();
    assert_eq!(index.len(), CORPUS.len());
    SimilarityJudge::new(encoder, index, feedback, Calibration::default()).unwrap()
}

#[test]
fn the_judge_grades_by_similarity_calibrated_against_the_corpus() {
    let judge = judge(Feedback::default());
    let q = "boundary layer transition at high mach numbers";
    let pairs = [
        pair("on-topic", q, CORPUS[1]),
        pair("off-topic", q, CORPUS[6]),
        pair("other-query", "cafeteria menu", CORPUS[6]),
    ];
    let mut embedded = 0;
    let got = judge
        .judge(&pairs, small_batches(), &mut |n| embedded += n)
        .unwrap();
    // two distinct queries and two distinct documents
    assert_eq!(embedded, 4);
    assert_eq!(got.len(), 3);
    for j in &got {
        let sum: f32 = j.grading.distribution.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert_eq!(j.grading.distribution.len(), judge.num_grades());
    }
    let (on, off, menu) = (&got[0], &got[1], &got[2]);
    assert!(on.similarity > off.similarity + 0.2, "{on:?} {off:?}");
    assert!(
        on.z > 1.0 && off.z < 0.0,
        "z-scores among the corpus: {on:?} {off:?}"
    );
    assert!(on.grading.grade > off.grading.grade);
    // the same document is relevant to the query that asks for it
    assert!(
        menu.z > 1.0 && menu.grading.grade > off.grading.grade,
        "{menu:?}"
    );
}

#[test]
fn feedback_moves_the_query_toward_its_top_documents() {
    let q = "boundary layer";
    let doc = CORPUS[2]; // hypersonic heat transfer: near the top documents, not the query
    let plain = judge(Feedback {
        depth: 0,
        weight: 0.0,
    });
    let fed = judge(Feedback {
        depth: 2,
        weight: 1.0,
    });
    let p = [pair("p", q, doc)];
    let opts = small_batches();
    let cos_plain = plain.judge(&p, opts, &mut |_| {}).unwrap()[0].similarity;
    let cos_fed = fed.judge(&p, opts, &mut |_| {}).unwrap()[0].similarity;

    // by hand: the query's two nearest corpus documents, their mean, the moved query
    let enc = encoder();
    let vq = enc.embed(&[q], opts, &mut |_| {}).unwrap().get(0);
    let vc = enc.embed(CORPUS, opts, &mut |_| {}).unwrap();
    let vd = enc.embed(&[doc], opts, &mut |_| {}).unwrap().get(0);
    let (_, top) = vc.matmul(&vq).topk(2, 0, true, true);
    let moved = &vq
        + vc.index_select(0, &top)
            .mean_dim(0, false, tch::Kind::Float);
    let moved = &moved / moved.norm();
    let want = f32::try_from(moved.dot(&vd)).unwrap();
    let want_plain = f32::try_from(vq.dot(&vd)).unwrap();
    assert!((cos_fed - want).abs() < 1e-5, "{cos_fed} vs {want}");
    assert!(
        (cos_plain - want_plain).abs() < 1e-5,
        "{cos_plain} vs {want_plain}"
    );
    assert!(
        (cos_fed - cos_plain).abs() > 1e-3,
        "feedback changed nothing"
    );
}

#[test]
fn bad_pairs_and_an_empty_corpus_are_refused_by_name() {
    let judge = judge(Feedback::default());
    let err = judge
        .judge(
            &[pair("ok", "q", "body"), pair("bad", " ", "body")],
            small_batches(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad") && err.contains("query"), "{err}");
    let encoder = encoder();
    let err = DenseIndex::build(&encoder, &[], small_batches(), &mut |_| {})
        .err()
        .expect("an empty corpus is refused")
        .to_string();
    assert!(err.contains("empty"), "{err}");
}
