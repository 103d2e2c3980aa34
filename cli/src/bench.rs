//! `labelfleet bench`: grading throughput of the engine on this machine, next to the FLOP limit
//! (FLOPs per pair over the measured fp32 matmul rate). With `--dump`, writes the encoded inputs,
//! the engine's grades and the exact model it ran, so `scripts/bench_python.py` runs Python
//! `transformers` on the same model and inputs in the same run.

use crate::{jsonl, progress, EngineArgs};
use anyhow::{Context, Result};
use clap::Args;
use labelfleet_slm::grading::{default_grade_labels, document_text, grade, load_grader};
use labelfleet_slm::layers::Linear;
use labelfleet_slm::{
    DecoderConfig, DecoderGrader, DecoderLm, EncodedPair, Grader, Grading, Pair, Placement,
    TextTokenizer,
};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Pairs JSONL to grade.
    #[arg(long, short)]
    input: PathBuf,
    /// Grade at most this many pairs.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Append one JSON line of results here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write inputs, grades and the model here for the Python baseline.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Label for this run in the results (e.g. the machine).
    #[arg(long, default_value = "")]
    label: String,
    /// Decoder only: random weights of the folder's config.json (throughput of configs whose
    /// weights are not here; honest for speed, meaningless for quality).
    #[arg(long)]
    random_weights: bool,
    /// Timed rounds over every pair, best kept (at least 2 with `--dtype int8`). On a GPU the
    /// first round also pays for each new batch shape (kernel selection, plan building); the
    /// later ones show a long-running worker's steady state.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// fp32 (or the model dtype) matmul rate in GFLOP/s: the roofline the engine is held to. It is
/// timed through the engine's own linear layer, so on the CPU it is oneDNN's packed GEMM, the
/// fastest one libtorch offers there (MKL's is slower on AMD processors).
fn matmul_gflops(device: tch::Device, kind: Kind) -> f64 {
    let n = if device.is_cuda() { 8192 } else { 2048 };
    let mut vs = tch::nn::VarStore::new(device);
    let layer = Linear::new(vs.root(), n as usize, n as usize, false, 1.0);
    vs.set_kind(kind);
    let a = Tensor::randn([n, n], (kind, device));
    let run = |iters: usize| {
        let start = Instant::now();
        for _ in 0..iters {
            let _c = tch::no_grad(|| layer.forward(&a));
        }
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        start.elapsed().as_secs_f64()
    };
    run(3);
    let mut iters = 4;
    loop {
        let t = run(iters);
        if t > 1.0 || iters > 4096 {
            return 2.0 * (n * n * n) as f64 * iters as f64 / t / 1e9;
        }
        iters *= 2;
    }
}

fn load(a: &BenchArgs, placement: Placement) -> Result<Box<dyn Grader>> {
    let dir = labelfleet_slm::resolve_model(&a.engine.model);
    // The same seed for every load: a fresh grade head (a bare sentence encoder) comes out the
    // same in fp32 and int8, so the two grade the same model.
    tch::manual_seed(0);
    Ok(if a.random_weights {
        let config = DecoderConfig::from_file(&dir.join("config.json"))?;
        let lm = DecoderLm::new(config, placement, a.engine.max_len)?;
        let tok = TextTokenizer::from_dir(&dir)?;
        Box::new(DecoderGrader::from_parts(
            lm,
            tok,
            &default_grade_labels(),
            format!("{} (random weights)", dir.display()),
        )?)
    } else {
        load_grader(&dir, &default_grade_labels(), placement, a.engine.max_len)
            .with_context(|| format!("loading model {}", dir.display()))?
    })
}

/// One engine configuration under test: its grader, best time and grades.
struct Variant {
    name: &'static str,
    placement: Placement,
    grader: Box<dyn Grader>,
    secs: f64,
    round_secs: Vec<f64>,
    grades: Vec<Grading>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let placement = a.engine.placement()?;
    // `--dtype int8` is measured next to fp32 on the same model and pairs, interleaved (two
    // rounds each, best kept), with the grade agreement between the two.
    let mut variants = vec![];
    if placement.int8 {
        let fp32 = Placement {
            int8: false,
            ..placement
        };
        variants.push(Variant {
            name: "labelfleet (tch)",
            placement: fp32,
            grader: load(&a, fp32)?,
            secs: f64::INFINITY,
            round_secs: vec![],
            grades: vec![],
        });
    }
    variants.push(Variant {
        name: if placement.int8 {
            "labelfleet (tch, int8)"
        } else {
            "labelfleet (tch)"
        },
        placement,
        grader: load(&a, placement)?,
        secs: f64::INFINITY,
        round_secs: vec![],
        grades: vec![],
    });
    let rounds = if placement.int8 {
        a.rounds.max(2)
    } else {
        a.rounds.max(1)
    };
    let grader = variants[0].grader.as_ref();
    let mut pairs: Vec<Pair> = vec![];
    for r in jsonl::read::<Pair>(&a.input)? {
        pairs.push(r?.value);
        if pairs.len() >= a.limit {
            break;
        }
    }
    let t0 = Instant::now();
    let encoded: Vec<EncodedPair> = pairs
        .iter()
        .map(|p| grader.encode_pair(p))
        .collect::<Result<_, _>>()?;
    let tokenize_s = t0.elapsed().as_secs_f64();
    let tokens: usize = encoded.iter().map(|e| e.ids.len()).sum();
    let flops: f64 = encoded.iter().map(|e| grader.flops(e.ids.len())).sum();
    let peak = matmul_gflops(placement.device, placement.kind);
    let opts = a.engine.batch_options(placement);
    // warm-up on a slice, then the timed runs over every pair
    let warm = encoded.len().min(opts.max_batch);
    for v in &variants {
        grade(v.grader.as_ref(), &encoded[..warm], opts, &mut |_| {})?;
    }
    for _ in 0..rounds {
        for v in variants.iter_mut() {
            let pb = progress::bar(encoded.len() as u64, "grading");
            let t1 = Instant::now();
            let grades = grade(v.grader.as_ref(), &encoded, opts, &mut |n| pb.inc(n as u64))?;
            if placement.device.is_cuda() {
                tch::Cuda::synchronize(0);
            }
            let secs = t1.elapsed().as_secs_f64();
            pb.finish_and_clear();
            v.round_secs.push(secs);
            if secs < v.secs {
                v.secs = secs;
            }
            v.grades = grades;
        }
    }
    let threads = tch::get_num_threads();
    let n = encoded.len();
    let mut rows = vec![];
    let mut results = vec![];
    for v in &variants {
        let pairs_per_s = n as f64 / v.secs;
        let achieved = flops / v.secs / 1e9;
        let mut result = serde_json::json!({
            "impl": v.name,
            "label": a.label,
            "model": v.grader.describe(),
            "device": v.placement.describe(),
            "threads": threads,
            "pairs": n,
            "rounds": rounds,
            "round_seconds": v.round_secs,
            "mean_tokens": tokens as f64 / n as f64,
            "seconds": v.secs,
            "pairs_per_s": pairs_per_s,
            "tokenize_pairs_per_s": n as f64 / tokenize_s,
            "gflop_per_pair": flops / n as f64 / 1e9,
            "achieved_gflops": achieved,
            "matmul_gflops": peak,
            "flop_limit_pairs_per_s": peak * 1e9 / (flops / n as f64),
            "fraction_of_flop_limit": achieved / peak,
            "token_budget": opts.token_budget,
        });
        if v.placement.int8 {
            let base = &variants[0].grades;
            let same = v
                .grades
                .iter()
                .zip(base)
                .filter(|(x, y)| x.grade == y.grade)
                .count();
            let max_dp = v
                .grades
                .iter()
                .zip(base)
                .flat_map(|(x, y)| x.distribution.iter().zip(&y.distribution))
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            result["grade_agreement_with_fp32"] = serde_json::json!(same as f64 / n as f64);
            result["max_abs_dp_vs_fp32"] = serde_json::json!(max_dp);
            result["max_abs_diff_vs_engine"] = serde_json::json!(max_dp);
            result["speedup_vs_fp32"] = serde_json::json!(variants[0].secs / v.secs);
        } else {
            result["max_abs_diff_vs_engine"] = serde_json::json!(0.0);
        }
        rows.push(vec![
            v.grader.describe(),
            v.placement.describe(),
            threads.to_string(),
            n.to_string(),
            format!("{:.0}", tokens as f64 / n as f64),
            format!("{pairs_per_s:.1}"),
            format!("{:.2}", flops / n as f64 / 1e9),
            format!("{achieved:.0}"),
            format!("{peak:.0}"),
            format!("{:.0}%", 100.0 * achieved / peak),
        ]);
        results.push(result);
    }
    println!(
        "{}",
        progress::table(
            &[
                "model",
                "device",
                "threads",
                "pairs",
                "tokens/pair",
                "pairs/s",
                "GFLOP/pair",
                "GFLOP/s",
                "matmul GFLOP/s",
                "of limit"
            ],
            rows,
        )
    );
    if let Some(r) = results
        .iter()
        .find(|r| r.get("grade_agreement_with_fp32").is_some())
    {
        println!(
            "int8 vs fp32: grade agreement {:.4}, max |dp| {:.2e}, speed-up {:.2}x",
            r["grade_agreement_with_fp32"].as_f64().unwrap_or(0.0),
            r["max_abs_dp_vs_fp32"].as_f64().unwrap_or(0.0),
            r["speedup_vs_fp32"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(out) = &a.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        for r in &results {
            writeln!(f, "{r}")?;
        }
    }
    // The dump holds the first variant (fp32 when int8 is measured): the Python baselines
    // compare against it.
    if let (Some(dump), false) = (&a.dump, a.random_weights) {
        let grades = &variants[0].grades;
        std::fs::create_dir_all(dump)?;
        variants[0]
            .grader
            .save(&dump.join("model"), serde_json::json!({"bench": true}))?;
        let mut w = jsonl::Writer::create(&dump.join("inputs.jsonl"))?;
        for ((p, e), g) in pairs.iter().zip(&encoded).zip(grades) {
            w.write(&serde_json::json!({
                "ids": e.ids, "type_ids": e.type_ids,
                "query": p.query, "document": document_text(p),
                "distribution": g.distribution,
            }))?;
        }
        w.finish()?;
    }
    Ok(())
}
