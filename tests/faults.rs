//! Leaders and faults: a leader frozen past its election TTL steps down without serving, and
//! one job survives twenty randomly timed faults (workers and leaders killed, the leader
//! frozen, etcd down longer than the TTL) with every pair labeled exactly once.
//!
//! Like Kubernetes, the tests restart what died (a fail-stopped coordinator, a killed worker,
//! etcd); what they check is that nothing is lost or labeled twice meanwhile.

mod harness;

use harness::{cranfield_pairs, runtime, Cluster, Options};
use labelfleet_proto::v1::task_service_client::TaskServiceClient;
use labelfleet_proto::v1::{JobState, LeaseTasksRequest};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(900);

fn assert_exactly_once(counts: &HashMap<String, usize>, n: usize, what: &str) {
    assert_eq!(counts.len(), n, "{what}: every pair labeled");
    let twice: Vec<_> = counts.iter().filter(|(_, &c)| c != 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: labeled more than once: {twice:?}"
    );
}

/// What replica `i` answers to a GetJob right now: Ok(true) when it serves as leader,
/// Ok(false) when it says it is not the leader, Err when it gives no answer.
fn serves(cluster: &Cluster, i: usize) -> Result<bool, String> {
    let url = format!("http://127.0.0.1:{}", cluster.coordinator_ports[i]);
    runtime().block_on(async {
        let call = async {
            let mut c = TaskServiceClient::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            // TaskService is the leader's own (a standby forwards only JobService): the leader
            // leases nothing for a request of 0 tasks, a standby answers UNAVAILABLE; anything
            // else (a connection cut as the process exits) is no answer.
            let r = c
                .lease_tasks(LeaseTasksRequest {
                    worker_id: "probe".into(),
                    max_tasks: 0,
                    kinds: vec![],
                })
                .await;
            match r {
                Ok(_) => Ok(true),
                Err(s) if s.code() == tonic::Code::Unavailable => Ok(false),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        };
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .map_err(|_| "no answer".to_string())?
    })
}

#[test]
fn a_leader_frozen_past_its_ttl_steps_down_without_serving() {
    let mut cluster = Cluster::start(Options {
        election_ttl_s: 3,
        ..Options::default()
    });
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.2, TIMEOUT);
    let old = cluster.wait_leader(Duration::from_secs(10));
    cluster.coordinators[old].signal("STOP");
    // The standby leads once the frozen leader's election lease runs out.
    let frozen = Instant::now();
    let new = loop {
        if serves(&cluster, 1 - old) == Ok(true) {
            break 1 - old;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(60),
            "no new leader\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "standby leads {:.1} s after the leader froze",
        frozen.elapsed().as_secs_f64()
    );
    // Resumed, the old leader must not serve as leader for a moment: its lease clock ran out
    // while it was frozen, and it steps down (exits, fail-stop).
    cluster.coordinators[old].signal("CONT");
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(5) && cluster.coordinators[old].alive() {
        assert_ne!(
            serves(&cluster, old),
            Ok(true),
            "the deposed leader served after it resumed\n{}",
            cluster.coordinators[old].log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !cluster.coordinators[old].alive(),
        "the deposed leader stepped down\n{}",
        cluster.coordinators[old].log_tail(20)
    );
    let log = std::fs::read_to_string(&cluster.coordinators[old].log).unwrap_or_default();
    assert!(
        log.contains("not renewed in time") || log.contains("lease lost"),
        "{log}"
    );
    assert_eq!(serves(&cluster, new), Ok(true));
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    assert_exactly_once(&cluster.stored_label_counts(&job_id), n, "stored");
    assert_exactly_once(&cluster.fetch_label_counts(&job_id), n, "fetched");
}

/// A small deterministic generator (no dependency for a test's dice).
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Restarts what died, as Kubernetes would: coordinators that stepped down or were killed,
/// workers, etcd.
fn heal(cluster: &mut Cluster) {
    if cluster.etcd.is_none() {
        cluster.start_etcd();
    }
    for i in 0..cluster.coordinators.len() {
        if !cluster.coordinators[i].alive() {
            cluster.restart_coordinator(i);
        }
    }
    for i in 0..cluster.workers.len() {
        if !cluster.workers[i].alive() {
            let port = cluster.worker_ports[i];
            cluster.workers[i] = cluster.spawn_worker(i, port);
        }
    }
}

#[test]
fn twenty_random_faults_in_one_job_lose_nothing() {
    let ttl = 3;
    let mut cluster = Cluster::start(Options {
        election_ttl_s: ttl,
        registration_ttl_s: ttl,
        task_lease_ms: 4_000,
        // faults re-lease tasks many times; none may fail for it
        max_attempts: 100,
        ..Options::default()
    });
    // Enough pairs that the job outlasts the twenty faults (about two minutes of them): three
    // CPU workers grade MiniLM at about 110 pairs/s here, so 12,000 pairs ran out before the
    // last faults once the engine got faster.
    let n = 30_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.05, TIMEOUT);
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut faults: Vec<String> = Vec::new();
    let mut done = 0;
    while faults.len() < 20 {
        std::thread::sleep(Duration::from_millis(1_500 + dice.next(2_500)));
        let leader = cluster.leader();
        let fault = match (dice.next(4), leader) {
            (0, _) | (_, None) => {
                let w = dice.next(cluster.workers.len() as u64) as usize;
                cluster.workers[w].kill9();
                format!("kill -9 worker w{w}")
            }
            (1, Some(l)) => {
                cluster.coordinators[l].kill9();
                format!("kill -9 leader coordinator{l}")
            }
            (2, Some(l)) => {
                cluster.coordinators[l].signal("STOP");
                std::thread::sleep(Duration::from_secs(ttl + 1));
                cluster.coordinators[l].signal("CONT");
                format!("SIGSTOP leader coordinator{l} for {} s", ttl + 1)
            }
            _ => {
                cluster.kill_etcd();
                std::thread::sleep(Duration::from_secs(ttl + 1));
                format!("etcd killed for {} s", ttl + 1)
            }
        };
        if let Some(job) = cluster.job(&job_id) {
            done = job.stages[0].done;
        }
        eprintln!(
            "fault {:2}: {fault} ({done}/{n} pairs done)",
            faults.len() + 1
        );
        faults.push(fault);
        std::thread::sleep(Duration::from_millis(500));
        heal(&mut cluster);
    }
    let job = loop {
        heal(&mut cluster);
        if let Some(job) = cluster.job(&job_id) {
            if job.state >= JobState::Succeeded as i32 {
                break job;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        done < n as u64,
        "the last fault came while the job still ran"
    );
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    let stored = cluster.stored_label_counts(&job_id);
    assert_exactly_once(&stored, n, "stored");
    assert_exactly_once(&cluster.fetch_label_counts(&job_id), n, "fetched");
    eprintln!(
        "{} faults, {n} pairs, each labeled exactly once (counted in the store and in the fetch)",
        faults.len()
    );
}
