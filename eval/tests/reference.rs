//! The measures agree with independent implementations (scikit-learn, the `krippendorff`
//! package) on random ratings, through `scripts/eval_reference.py` in the project's venv.

use labelfleet_eval::{agreement, Judgment};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn venv_python() -> PathBuf {
    let home = std::env::var_os("LABELFLEET_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache")
                });
            cache.join("labelfleet")
        });
    let py = home.join("venv/bin/python");
    assert!(
        py.is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        py.display()
    );
    py
}

#[test]
fn measures_match_scikit_learn_and_krippendorff() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let levels = 4;
    let mut judgments = vec![];
    for q in 0..40 {
        for d in 0..12 {
            let human = rng.random_range(0..levels);
            // a noisy labeler correlated with the humans
            let predicted = if rng.random_bool(0.6) {
                human
            } else {
                rng.random_range(0..levels)
            };
            let score = predicted as f64 + rng.random_range(0.0..0.99);
            judgments.push(Judgment {
                query: format!("q{q}"),
                doc: format!("d{d}"),
                human,
                predicted,
                score,
            });
        }
    }
    let ours = agreement(&judgments, levels).unwrap();
    let queries: Vec<serde_json::Value> = (0..40)
        .map(|q| {
            let js: Vec<&Judgment> = judgments.iter().filter(|j| j.query == format!("q{q}")).collect();
            serde_json::json!({"human": js.iter().map(|j| j.human).collect::<Vec<_>>(), "scores": js.iter().map(|j| j.score).collect::<Vec<_>>()})
        })
        .collect();
    let input = serde_json::json!({
        "human": judgments.iter().map(|j| j.human).collect::<Vec<_>>(),
        "predicted": judgments.iter().map(|j| j.predicted).collect::<Vec<_>>(),
        "queries": queries, "k": 10, "levels": levels,
    });
    let dir = std::env::temp_dir().join(format!("lf-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.json");
    std::fs::write(&path, input.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/eval_reference.py");
    let out = std::process::Command::new(venv_python())
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str, ours: f64| {
        let theirs = r[name].as_f64().unwrap();
        println!("{name}: ours {ours:.6}, reference {theirs:.6}");
        assert!(
            (ours - theirs).abs() < 1e-9,
            "{name}: ours {ours}, reference {theirs}"
        );
    };
    check("accuracy", ours.accuracy);
    check("kappa", ours.cohen_kappa);
    check("kappa_linear", ours.linear_kappa);
    check("kappa_quadratic", ours.quadratic_kappa);
    check("alpha_ordinal", ours.krippendorff_alpha);
    check("ndcg", ours.ndcg_at_10);
    assert!(
        ours.quadratic_kappa > 0.3,
        "the noisy labeler agrees more than chance"
    );
    std::fs::remove_dir_all(dir).ok();
}
