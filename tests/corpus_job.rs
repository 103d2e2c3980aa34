//! A corpus job (the whole method, chained by the coordinator) survives the loss of its
//! leader in every stage: on a bucket of a real S3-compatible server (moto), a real etcd, two
//! coordinator replicas, three workers and the trainer, `labelfleet run --coordinator` runs the
//! method on a Cranfield slice while the test kills (SIGKILL) the leading coordinator during
//! the query synthesis, the teacher grading, the distillation and the student labeling, each
//! time restarting the killed replica as the next standby. The job must still succeed, label
//! every target pair exactly once, and write the same queries, teacher labels and student
//! qrels, byte for byte, as an undisturbed run with the same seed (the embedded `labelfleet
//! run`, run alongside).

mod harness;

use harness::{Cluster, Options, Proc, Store};
use labelfleet_proto::v1::{Job, JobKind, JobState, ListJobsRequest};
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// The student's longest input: `run --student-max-len` and the trainer's `--max-tokens`.
const STUDENT_MAX_LEN: usize = 128;
/// The longest the disturbed run may take before the test gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(720);
/// Stages of a corpus job, in order (`Job.stage`); "teacher" comes again (the evaluation pool)
/// just before "student".
const STAGES: [&str; 7] = [
    "corpus",
    "queries",
    "negatives",
    "teacher",
    "distill",
    "student",
    "report",
];
/// How long a stage must have been seen before its leader is killed: long enough for the
/// stage's child job to have been submitted and to have committed some tasks, in the stages
/// that last long enough for that; at once in the short ones.
fn dwell(stage: &str) -> Duration {
    match stage {
        "queries" | "teacher" => Duration::from_millis(1500),
        _ => Duration::ZERO,
    }
}
/// A restarted replica is given this long to start and campaign before the next kill.
const STANDBY_SETTLE: Duration = Duration::from_secs(2);

/// The same small run for the disturbed and the undisturbed cluster (only `--coordinator`
/// differs): 16 seed documents, two topic queries and one metadata query each (fewer leave
/// under the 5 usable queries the method needs once the filters drop some), a one-layer student
/// trained one epoch, and an evaluation pool of 2 human-judged queries.
fn run_args(corpus: &Path, out: &Path) -> Vec<String> {
    let data = harness::cranfield_dir();
    let mut args: Vec<String> = [
        "run",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--seed-docs",
        "16",
        "--queries-per-doc",
        "2",
        "--metadata-queries-per-doc",
        "1",
        "--epochs",
        "1",
        "--student-layers",
        "1",
        "--eval-sample",
        "2",
        "--pool-k",
        "5",
        "--seed",
        "3",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "--student-max-len".into(),
        STUDENT_MAX_LEN.to_string(),
        "--corpus".into(),
        corpus.display().to_string(),
        "--eval-queries".into(),
        data.join("queries.tsv").display().to_string(),
        "--eval-qrels".into(),
        data.join("qrels.txt").display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    args
}

/// The cluster's corpus job (the one job whose spec is JOB_KIND_CORPUS), through the cluster
/// client; None while no leader answers or before it was submitted.
fn find_corpus_job(cluster: &Cluster) -> Option<Job> {
    list_jobs(cluster)?.into_iter().find(|j| {
        j.spec
            .as_ref()
            .is_some_and(|s| s.kind == JobKind::Corpus as i32)
    })
}

/// Every job of the cluster, through the cluster client (None while no leader answers).
fn list_jobs(cluster: &Cluster) -> Option<Vec<Job>> {
    let endpoints = labelfleet_client::endpoints(&cluster.coordinator_list());
    harness::runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(endpoints, Duration::from_secs(1))
            .await
            .ok()?;
        let mut jobs = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .jobs()
                .list_jobs(ListJobsRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            jobs.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Some(jobs);
            }
            page_token = page.next_page_token;
        }
    })
}

fn exit_code(p: &mut Proc) -> Option<std::process::ExitStatus> {
    p.child.try_wait().ok().flatten()
}

fn wait_exit(p: &mut Proc, timeout: Duration, cluster: &Cluster) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = exit_code(p) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not finish in {timeout:?}\n{}\n{}",
            p.name,
            p.log_tail(40),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A kill of the leader: the stage the corpus job was in, the replica killed, the replica
/// that took over, and how long until it answered as leader.
#[derive(Debug)]
struct Kill {
    stage: String,
    killed: usize,
    new_leader: usize,
    failover: Duration,
}

#[test]
fn s3_a_corpus_job_survives_its_leader_killed_in_every_stage() {
    let started = Instant::now();
    let mut cluster = Cluster::start(Options {
        store: Store::S3,
        trainer: true,
        trainer_max_tokens: STUDENT_MAX_LEN,
        ..Options::default()
    });
    let dir = cluster.dir.path().to_path_buf();
    let corpus = harness::cranfield_slice(&dir, 300);
    let out = dir.join("out-cluster");
    let reference = dir.join("out-reference");

    // The undisturbed run: the embedded `labelfleet run` (an in-process cluster), alongside.
    let mut undisturbed = harness::spawn(
        "run-reference",
        &harness::binary(),
        &run_args(&corpus, &reference),
        &dir,
    );
    // The disturbed run, on the cluster.
    let mut args = run_args(&corpus, &out);
    args.extend(["--coordinator".into(), cluster.coordinator_list()]);
    let mut run = harness::spawn("run-cluster", &harness::binary(), &args, &dir);

    // Follow the corpus job and kill the leader once in each stage it is seen in.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut job_id: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut stage_since = Instant::now();
    let mut standby_since = Instant::now();
    let mut kills: Vec<Kill> = Vec::new();
    let status = loop {
        if let Some(status) = exit_code(&mut run) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "run did not finish in {RUN_TIMEOUT:?}; stages seen {seen:?}, kills {kills:?}\n{}\n{}",
            run.log_tail(40),
            cluster.logs()
        );
        let job = match &job_id {
            None => find_corpus_job(&cluster),
            Some(id) => cluster.job(id),
        };
        let Some(job) = job else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        job_id.get_or_insert_with(|| job.job_id.clone());
        if seen.last() != Some(&job.stage) {
            eprintln!(
                "[{:>5.1}s] corpus job {} in stage `{}`",
                started.elapsed().as_secs_f64(),
                job.job_id,
                job.stage
            );
            seen.push(job.stage.clone());
            stage_since = Instant::now();
        }
        let stage = job.stage.clone();
        let running = job.state < JobState::Succeeded as i32;
        if running
            && STAGES[1..].contains(&stage.as_str())
            && !kills.iter().any(|k| k.stage == stage)
            && stage_since.elapsed() >= dwell(&stage)
            && standby_since.elapsed() >= STANDBY_SETTLE
        {
            let old = cluster.wait_leader(Duration::from_secs(30));
            cluster.coordinators[old].kill9();
            let t = Instant::now();
            let new = cluster.wait_leader(Duration::from_secs(60));
            let failover = t.elapsed();
            assert_ne!(old, new, "a standby must lead after the leader was killed");
            eprintln!(
                "[{:>5.1}s] killed leader coordinator{old} in stage `{stage}`; coordinator{new} leads after {failover:?}",
                started.elapsed().as_secs_f64()
            );
            kills.push(Kill {
                stage,
                killed: old,
                new_leader: new,
                failover,
            });
            // The killed replica comes back with the same arguments, as the next standby.
            cluster.restart_coordinator(old);
            standby_since = Instant::now();
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let run_log = std::fs::read_to_string(&run.log).unwrap_or_default();
    assert!(
        status.success(),
        "labelfleet run --coordinator failed ({status}); stages seen {seen:?}, kills {kills:?}\n{}\n{}",
        run.log_tail(60),
        cluster.logs()
    );
    let cluster_run_s = started.elapsed().as_secs_f64();
    eprintln!("stages seen: {seen:?}");
    for k in &kills {
        eprintln!(
            "killed coordinator{} in `{}`; coordinator{} led after {:?}",
            k.killed, k.stage, k.new_leader, k.failover
        );
    }
    // Every check below is made, and all that fail are reported together.
    let mut problems: Vec<String> = Vec::new();

    // The job the test followed is the one `run` submitted, and it succeeded.
    let job_id = job_id.expect("the corpus job was never seen in the job list");
    if let Some(line) = run_log.lines().find(|l| l.contains("corpus job ")) {
        if !line.contains(&job_id) {
            problems.push(format!(
                "run submitted another corpus job than the one followed ({job_id}): {line}"
            ));
        }
    }
    let job = cluster
        .job(&job_id)
        .expect("the leader answers for the corpus job");
    if job.state != JobState::Succeeded as i32 {
        problems.push(format!("corpus job {job_id} did not succeed: {job:?}"));
    }

    // The leader was killed in at least three different stages of the job.
    let killed: Vec<&str> = kills.iter().map(|k| k.stage.as_str()).collect();
    if killed.len() < 3 {
        problems.push(format!(
            "the leader was killed in {} stages ({killed:?}), fewer than 3; stages seen: {seen:?}",
            killed.len()
        ));
    }

    // No child job was submitted twice: a new leader's driver gets the child jobs of the
    // stages it runs again back (same idempotency key) instead of submitting others. Two
    // children with the same name, spec (as listed, without its pairs) and item count are the
    // same stage's job submitted twice.
    let jobs = list_jobs(&cluster).expect("listing jobs");
    let mut children: BTreeMap<(String, Vec<u8>, u64), Vec<String>> = BTreeMap::new();
    for j in &jobs {
        let spec = j.spec.clone().unwrap_or_default();
        let items = j.stages.first().map(|s| s.total).unwrap_or_default();
        eprintln!(
            "job {} `{}` kind {:?} state {:?} items {items} stage `{}`",
            j.job_id,
            spec.name,
            JobKind::try_from(spec.kind).unwrap_or(JobKind::Unspecified),
            JobState::try_from(j.state).unwrap_or(JobState::Unspecified),
            j.stage
        );
        if spec.kind == JobKind::Corpus as i32 {
            continue;
        }
        if j.state != JobState::Succeeded as i32 {
            problems.push(format!(
                "child job {} `{}` ended {:?}",
                j.job_id,
                spec.name,
                JobState::try_from(j.state).unwrap_or(JobState::Unspecified)
            ));
        }
        children
            .entry((spec.name.clone(), spec.encode_to_vec(), items))
            .or_default()
            .push(j.job_id.clone());
    }
    for ((name, _, items), ids) in &children {
        if ids.len() > 1 {
            problems.push(format!(
                "child job `{name}` ({items} items) submitted {} times: {ids:?}",
                ids.len()
            ));
        }
    }

    // Every target pair labeled exactly once by the student.
    let labels_text = String::from_utf8(read(&out.join("eval_student_labels.jsonl"))).unwrap();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for line in labels_text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("label line {line}: {e}"));
        for field in [
            "id",
            "query",
            "doc_id",
            "grade",
            "expected",
            "distribution",
            "model",
            "checkpoint",
            "prompt_version",
        ] {
            if v[field].is_null() {
                problems.push(format!("field {field} missing in {line}"));
            }
        }
        if v["grade"].as_u64().is_none_or(|g| g > 3) {
            problems.push(format!("grade out of range: {line}"));
        }
        *ids.entry(v["id"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    let dups: Vec<_> = ids.iter().filter(|(_, &n)| n > 1).take(5).collect();
    if !dups.is_empty() {
        problems.push(format!("target pairs labeled more than once: {dups:?}"));
    }
    let qrels_lines = String::from_utf8(read(&out.join("eval_student.qrels")))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if qrels_lines == 0 || ids.len() != qrels_lines {
        problems.push(format!(
            "{} labeled target pairs, {qrels_lines} lines in eval_student.qrels",
            ids.len()
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&read(&out.join("report.json"))).expect("report.json");
    // The pool size, where the report states it (a top-level number whose key names the pool).
    if let Some(obj) = report.as_object() {
        for (k, v) in obj {
            if let Some(n) = v.as_u64().filter(|_| k.contains("pool")) {
                if n != ids.len() as u64 {
                    problems.push(format!(
                        "{} labeled target pairs, report.json `{k}` says {n}",
                        ids.len()
                    ));
                }
            }
        }
    }
    for file in ["agreement.png", "queries.jsonl", "teacher_labels.jsonl"] {
        if !out.join(file).is_file() {
            problems.push(format!("{file} missing from the outputs"));
        }
    }
    if !out.join("student").is_dir() {
        problems.push("student/ missing from the outputs".into());
    }

    // The same outputs as the undisturbed run, byte for byte.
    let status = wait_exit(&mut undisturbed, RUN_TIMEOUT, &cluster);
    assert!(
        status.success(),
        "the undisturbed (embedded) run failed ({status})\n{}\nand: {problems:#?}",
        undisturbed.log_tail(60)
    );
    let reference_ids: HashSet<String> =
        String::from_utf8(read(&reference.join("eval_student_labels.jsonl")))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap_or_default().to_string()
            })
            .collect();
    if ids.keys().cloned().collect::<HashSet<_>>() != reference_ids {
        problems.push(format!(
            "the target pairs differ from the undisturbed run's ({} here, {} there)",
            ids.len(),
            reference_ids.len()
        ));
    }
    for file in [
        "queries.jsonl",
        "teacher_labels.jsonl",
        "eval_student.qrels",
    ] {
        let (a, b) = (read(&reference.join(file)), read(&out.join(file)));
        if a.is_empty() {
            problems.push(format!("{file} of the undisturbed run is empty"));
        }
        if a != b {
            problems.push(format!(
                "{file} differs between the undisturbed run and the run whose leader was killed"
            ));
        }
    }
    // the default teacher is a committee of one similarity judge, kept in every label
    let labels = String::from_utf8(read(&reference.join("teacher_labels.jsonl"))).unwrap();
    for line in labels.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let judges = l["judges"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ok = l["model"]
            .as_str()
            .unwrap_or_default()
            .starts_with("committee:similarity")
            && judges.len() == 1
            && judges[0]["judge"] == "similarity"
            && judges[0]["distribution"] == l["distribution"];
        if !ok {
            problems.push(format!(
                "a teacher label without its committee's judge: {line}"
            ));
            break;
        }
    }
    if !problems.is_empty() {
        // Keep the outputs and logs for a look, when asked to.
        if let Some(keep) = std::env::var_os("LABELFLEET_KEEP_TEST_DIR") {
            let keep = Path::new(&keep);
            let _ = std::fs::create_dir_all(keep);
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(&out)
                .arg(&reference)
                .args(
                    std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "log")),
                )
                .arg(keep)
                .status();
        }
        panic!(
            "corpus job {job_id} (leader killed in {killed:?}):\n{}",
            problems.join("\n")
        );
    }
    eprintln!(
        "corpus job {job_id} succeeded in {cluster_run_s:.0}s with the leader killed in {killed:?}; \
         {} target pairs each labeled once; test {:.0}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
}
