//! `--dtype int8`: dynamic int8 linear layers (fbgemm) for the cross-encoder on CPU. The grades
//! must stay those of fp32 on a fixed set of pairs, and CUDA must refuse it.

mod common;
#[path = "common/synthetic.rs"]
mod synthetic;

use labelfleet_slm::grading::{
    default_grade_labels, grade, load_grader, BatchOptions, EncoderGrader,
};
use labelfleet_slm::int8::Int8Linear;
use labelfleet_slm::train::{train, Example, TrainConfig};
use labelfleet_slm::{EncodedPair, Grader, Placement};
use tch::{Kind, Tensor};

/// Floors for the fixed pairs below (measured: see BENCHMARKS.md, engine section).
const MIN_AGREEMENT: f64 = 0.95;
// The largest move of one grade probability. Measured 0.027 on one trained student and 0.083
// on another (the student is trained afresh where no cached copy exists, and training is not
// bit-reproducible across runs), with grades equal in both: the bound leaves room for that.
const MAX_DP: f32 = 0.12;

#[test]
fn int8_is_refused_on_cuda_and_parsed_on_cpu() {
    for dev in ["cuda", "cuda:0", "cuda:3"] {
        let err = Placement::parse(dev, Some("int8")).unwrap_err().to_string();
        assert!(err.contains("CPU only"), "{dev}: {err}");
    }
    let p = Placement::parse("cpu", Some("int8")).unwrap();
    assert!(p.int8);
    assert_eq!(p.kind, Kind::Float);
    assert_eq!(p.describe(), "cpu/int8");
    assert!(!Placement::parse("cpu", Some("fp32")).unwrap().int8);
    assert!(!Placement::parse("cpu", None).unwrap().int8);
}

#[test]
fn int8_linear_is_close_to_fp32() {
    tch::manual_seed(1);
    let w = Tensor::randn([1536, 384], (Kind::Float, tch::Device::Cpu)) * 0.05;
    let b = Tensor::randn([1536], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::randn([3, 17, 384], (Kind::Float, tch::Device::Cpu));
    let q = Int8Linear::quantize(&w, Some(&b)).unwrap();
    let y = q.forward(&x);
    assert_eq!(y.size(), [3, 17, 1536]);
    let r = x.linear(&w, Some(&b));
    let rel = (&y - &r).norm().double_value(&[]) / r.norm().double_value(&[]);
    assert!(rel < 0.02, "relative error {rel}");
}

/// A student with a trained head (a bare sentence encoder's fresh head gives near-uniform
/// distributions whose argmax is a coin toss): MiniLM, 2 epochs on the synthetic task's training
/// topics, saved and loaded back in fp32 and in int8; graded on every topic's pairs.
#[test]
fn int8_grades_agree_with_fp32() {
    let labels = default_grade_labels();
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("student");
    {
        // the bare encoder's new head is drawn from libtorch's global generator: seeded, the
        // student (and so this comparison) is the same on every run
        tch::manual_seed(7);
        let student = EncoderGrader::load(
            &common::model_dir("all-minilm-l6-v2"),
            &labels,
            Placement::cpu(),
            256,
        )
        .unwrap();
        let (train_topics, _) = synthetic::split();
        let train_set: Vec<Example> = synthetic::pairs(&train_topics)
            .into_iter()
            .map(|(p, g)| Example {
                input: student.encode_pair(&p).unwrap(),
                target: synthetic::target(g),
            })
            .collect();
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            learning_rate: 2e-4,
            ..Default::default()
        };
        train(&student, &train_set, &cfg, &mut |_| {}).unwrap();
        student
            .save(&ckpt, serde_json::json!({"test": "int8"}))
            .unwrap();
    }
    let fp32 = load_grader(&ckpt, &labels, Placement::cpu(), 256).unwrap();
    let int8 = load_grader(
        &ckpt,
        &labels,
        Placement::parse("cpu", Some("int8")).unwrap(),
        256,
    )
    .unwrap();
    let topics: Vec<usize> = (0..synthetic::TOPICS.len()).collect();
    let encoded: Vec<EncodedPair> = synthetic::pairs(&topics)
        .iter()
        .map(|(p, _)| fp32.encode_pair(p).unwrap())
        .collect();
    let opts = BatchOptions::for_placement(Placement::cpu());
    let a = grade(fp32.as_ref(), &encoded, opts, &mut |_| {}).unwrap();
    let b = grade(int8.as_ref(), &encoded, opts, &mut |_| {}).unwrap();
    let same = a.iter().zip(&b).filter(|(x, y)| x.grade == y.grade).count();
    let agreement = same as f64 / a.len() as f64;
    let max_dp = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| x.distribution.iter().zip(&y.distribution))
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "int8 vs fp32 on {} pairs: agreement {agreement:.4}, max |dp| {max_dp:.2e}",
        a.len()
    );
    assert!(agreement >= MIN_AGREEMENT, "agreement {agreement}");
    assert!(max_dp <= MAX_DP, "max |dp| {max_dp}");
}

#[test]
fn int8_decoder_is_refused() {
    let dir = common::model_dir("smollm2-135m-instruct");
    let p = Placement::parse("cpu", Some("int8")).unwrap();
    let err = load_grader(&dir, &default_grade_labels(), p, 512)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("cross-encoders"), "{err}");
}
