//! The engine thread (`labelfleet_slm::host`): requests through its async handle give what the
//! engine gives when called directly, failures say whether another attempt may succeed, and
//! query synthesis is the same for the same documents and seed.
//!
//! Every test uses one libtorch thread: the thread count is global to the process, and sums
//! split over another count round differently, which can change a sampled token.

mod common;

use labelfleet_slm::grading::{
    default_grade_labels, grade, load_grader_with_prompt, BatchOptions, GradePrompt, Pair,
};
use labelfleet_slm::host::{EngineThread, GradeRequest, SynthesisRequest};
use labelfleet_slm::querygen::SeedDocument;
use labelfleet_slm::Placement;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

const MAX_LEN: usize = 256;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pairs() -> Vec<Pair> {
    [
        (
            "p0",
            "wing flutter at supersonic speed",
            "Flutter of thin wings in supersonic flow is analysed.",
        ),
        (
            "p1",
            "wing flutter at supersonic speed",
            "The boundary layer on a heated flat plate.",
        ),
        (
            "p2",
            "heat transfer in laminar boundary layers",
            "Heat transfer through a laminar boundary layer with suction.",
        ),
    ]
    .iter()
    .map(|(id, q, body)| Pair {
        id: id.to_string(),
        query: q.to_string(),
        title: None,
        body: body.to_string(),
        metadata: BTreeMap::new(),
    })
    .collect()
}

#[test]
fn grades_through_the_thread_equal_the_engine_called_directly() {
    let model = common::model_dir("smollm2");
    let placement = Placement::parse("cpu", None).expect("cpu");
    let engine = EngineThread::start(placement, 1).expect("engine thread");
    let graded = runtime()
        .block_on(engine.grade(GradeRequest {
            model: model.clone(),
            prompt: GradePrompt::default(),
            grade_labels: Vec::new(),
            max_len: MAX_LEN,
            pairs: pairs(),
        }))
        .expect("graded");
    assert_eq!(engine.pairs.load(Ordering::Relaxed), 3);

    let direct = load_grader_with_prompt(
        &model,
        &default_grade_labels(),
        placement,
        MAX_LEN,
        GradePrompt::default(),
    )
    .expect("grader");
    let encoded: Vec<_> = pairs()
        .iter()
        .map(|p| direct.encode_pair(p).expect("encoded"))
        .collect();
    let want = grade(
        direct.as_ref(),
        &encoded,
        BatchOptions::for_placement(placement),
        &mut |_| {},
    )
    .expect("grades");
    assert_eq!(graded.gradings.len(), want.len());
    for (got, want) in graded.gradings.iter().zip(&want) {
        assert_eq!(got.grade, want.grade);
        for (a, b) in got.distribution.iter().zip(&want.distribution) {
            assert!(
                (a - b).abs() < 1e-5,
                "{:?} vs {:?}",
                got.distribution,
                want.distribution
            );
        }
    }
    assert_eq!(graded.model, direct.describe());
}

#[test]
fn failures_say_whether_another_attempt_may_succeed() {
    let placement = Placement::parse("cpu", None).expect("cpu");
    let engine = EngineThread::start(placement, 1).expect("engine thread");
    let rt = runtime();
    // a model folder that is not there (yet): another attempt, or another worker, may have it
    let missing = rt
        .block_on(engine.grade(GradeRequest {
            model: "/nonexistent/model".into(),
            prompt: GradePrompt::default(),
            grade_labels: Vec::new(),
            max_len: MAX_LEN,
            pairs: pairs(),
        }))
        .expect_err("no such model");
    assert!(missing.retryable, "{missing:?}");
    assert!(missing.reason.contains("/nonexistent/model"), "{missing:?}");
    // an input length with no room for the prompt: the request itself is bad
    let short = rt
        .block_on(engine.synthesize(SynthesisRequest {
            model: common::model_dir("smollm2"),
            max_len: 40,
            seeds: vec![seed()],
            queries_per_document: 1,
            metadata_queries_per_document: 0,
            seed: 7,
        }))
        .expect_err("too short");
    assert!(!short.retryable, "{short:?}");
    assert!(short.reason.contains("max_tokens 40"), "{short:?}");
    assert_eq!(engine.pairs.load(Ordering::Relaxed), 0);
}

fn seed() -> SeedDocument {
    SeedDocument {
        id: "d1".into(),
        title: Some("Flutter of thin wings".into()),
        body: "Flutter of thin wings in supersonic flow is analysed with piston theory.".into(),
        metadata: [("author".to_string(), "J. Smith".to_string())].into(),
    }
}

#[test]
fn the_same_documents_and_seed_give_the_same_queries() {
    let placement = Placement::parse("cpu", None).expect("cpu");
    let engine = EngineThread::start(placement, 1).expect("engine thread");
    let rt = runtime();
    let request = |run_seed: u64| SynthesisRequest {
        model: common::model_dir("smollm2"),
        max_len: MAX_LEN,
        seeds: vec![seed()],
        queries_per_document: 2,
        metadata_queries_per_document: 1,
        seed: run_seed,
    };
    let a = rt.block_on(engine.synthesize(request(7))).expect("queries");
    let b = rt.block_on(engine.synthesize(request(7))).expect("queries");
    // two topic queries and one metadata query asked for; the engine may drop an empty one
    assert!(!a.is_empty() && a.len() <= 3, "{a:?}");
    let texts = |q: &[labelfleet_slm::querygen::GeneratedQuery]| {
        q.iter().map(|g| g.query.clone()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&a), texts(&b));
    assert!(a.iter().all(|q| q.doc_id == "d1"));
}
