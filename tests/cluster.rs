//! The cluster on loopback with a real etcd, real processes and the real engine (MiniLM
//! cross-encoder on CPU). Every test proves its claim by counting labels, both as fetched
//! through the client and as stored in the object store.

mod harness;

use harness::{cranfield_pairs, Cluster, Options};
use labelfleet_proto::v1::JobState;
use std::collections::HashMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(900);

/// Every pair except `missing` has exactly one label; none has more; nothing else is labeled.
fn assert_exactly_once(counts: &HashMap<String, usize>, n: usize, missing: &[String], what: &str) {
    let dup: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(dup.is_empty(), "{what}: duplicated labels: {dup:?}");
    let lost: Vec<String> = (0..n)
        .map(|i| format!("p{i}"))
        .filter(|p| !counts.contains_key(p) && !missing.contains(p))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "{what}: lost labels, e.g. {lost:?}");
    for m in missing {
        assert!(!counts.contains_key(m), "{what}: {m} should have no label");
    }
    assert_eq!(counts.len(), n - missing.len(), "{what}: label count");
}

fn check_job(cluster: &Cluster, job_id: &str, n: usize, missing: &[String]) {
    let fetched = cluster.fetch_label_counts(job_id);
    assert_exactly_once(&fetched, n, missing, "fetched");
    let stored = cluster.stored_label_counts(job_id);
    assert_exactly_once(&stored, n, missing, "stored");
}

#[test]
fn ten_thousand_pairs_each_labeled_once_and_a_bad_task_fails_alone() {
    let cluster = Cluster::start(Options::default());
    let n = 10_000;
    // p4321 has an empty query: its task (pairs 4300..4399 at 100 per task) must fail with the
    // reason recorded, and every other pair must be labeled.
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &["p4321"]);
    let job_id = cluster.submit(&corpus, &pairs, 100);
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    let stage = &job.stages[0];
    assert_eq!((stage.total, stage.done, stage.failed), (n as u64, 9_900, 100));
    assert!(
        job.error.contains("p4321") && job.error.contains("query"),
        "the failure names the pair and field: {}",
        job.error
    );
    let missing: Vec<String> = (4300..4400).map(|i| format!("p{i}")).collect();
    check_job(&cluster, &job_id, n, &missing);
    // Every worker took part (the leader spread the tasks).
    for w in &cluster.workers {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        assert!(log.contains("model loaded"), "{} did no work:\n{}", w.name, w.log_tail(20));
    }
}

#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let mut cluster = Cluster::start(Options::default());
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    cluster.workers[0].kill9();
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
}

#[test]
fn the_standby_takes_over_when_the_leader_is_killed() {
    let mut cluster = Cluster::start(Options::default());
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    let old = cluster.wait_leader(Duration::from_secs(10));
    cluster.coordinators[old].kill9();
    let new = cluster.wait_leader(Duration::from_secs(60));
    assert_ne!(old, new, "a standby must lead now");
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
    let log = std::fs::read_to_string(&cluster.coordinators[new].log).unwrap_or_default();
    assert!(log.contains("state loaded"), "the new leader reloaded state");
}

#[test]
fn an_etcd_restart_mid_job_loses_nothing() {
    let mut cluster = Cluster::start(Options {
        election_ttl_s: 10,
        registration_ttl_s: 10,
        ..Options::default()
    });
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    cluster.kill_etcd();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_etcd();
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
}
