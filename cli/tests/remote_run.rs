//! `labelfleet run --coordinator` against `labelfleet serve` (a cluster in its own process, on
//! free loopback ports) runs the same pipeline as the embedded `run`: with the same seed it
//! writes the same queries and teacher labels, byte for byte.

use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;

fn free_port() -> u16 {
    labelfleet_cluster::ports::free_loopback_port().expect("a free loopback port")
}

/// Stops the cluster when the test ends, passed or not.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(corpus: &Path, out: &Path, extra: &[String]) {
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args([
            "run",
            "--device",
            "cpu",
            "--seed-docs",
            "16",
            "--queries-per-doc",
            "2",
            "--metadata-queries-per-doc",
            "1",
            "--epochs",
            "1",
            // a one-layer student and four negatives a query: the test compares the outputs of
            // two runs byte for byte, which needs no more model work than this
            "--student-layers",
            "1",
            "--negatives-per-query",
            "4",
            "--seed",
            "3",
            "--eval-sample",
            "3",
            "--pool-k",
            "5",
        ])
        // targets without human judgments: the student labels them, nothing is compared
        .arg("--eval-queries")
        .arg(common::data_dir().join("cranfield/queries.tsv"))
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn run_on_a_served_cluster_writes_what_the_embedded_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let slice = common::cranfield_slice(dir.path(), 300);

    let (jobs, trainer) = (free_port(), free_port());
    let store = dir.path().join("store");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_labelfleet"))
            .args(["serve", "--device", "cpu"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{jobs}"))
            .arg("--trainer-listen")
            .arg(format!("127.0.0.1:{trainer}"))
            .arg("--store")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let embedded = dir.path().join("embedded");
    run(&slice, &embedded, &[]);
    let remote = dir.path().join("remote");
    run(
        &slice,
        &remote,
        &["--coordinator".into(), format!("127.0.0.1:{jobs}")],
    );

    for file in [
        "queries.jsonl",
        "teacher_labels.jsonl",
        "eval_student.qrels",
        "student/model.safetensors",
    ] {
        let a = std::fs::read(embedded.join(file)).unwrap();
        let b = std::fs::read(remote.join(file)).unwrap();
        assert!(!a.is_empty(), "{file} is empty");
        assert!(
            a == b,
            "{file} differs between the embedded and the served cluster"
        );
    }
    // the checkpoint came back from the cluster's store, and its dataset went in
    assert!(remote.join("student/labelfleet.json").is_file());
    let datasets = std::fs::read_dir(store.join("datasets")).unwrap().count();
    assert_eq!(datasets, 1);
}
