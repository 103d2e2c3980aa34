//! The API teacher against a real OpenAI-compatible server: llama.cpp's `llama-server` serving
//! SmolLM2-135M-Instruct (Q4_1 GGUF), started by each test on a free loopback port. Faults are
//! injected by a small proxy in front of it (tests/common), which forwards everything else to
//! the real server.
//!
//! This crate does not link libtorch, so the local engine's grades of the agreement test are
//! recorded in `tests/data/smollm2_local_grades.jsonl`, written by the engine itself (see
//! [`write_agreement_pairs`] for how to write them again).

mod common;

use common::{cranfield_pairs, llama_server_bin, Action, LlamaServer, Proxy};
use labelfleet_openai::querygen::request_seed;
use labelfleet_openai::{ApiClient, ApiConfig, ApiError, GradeSource};
use labelfleet_types::prompt::grade_messages;
use labelfleet_types::query::{clean_query, mentions_value, sample_intents};
use labelfleet_types::{
    strip_special_tokens, ChatTemplate, Grading, Pair, SamplingParams, SeedDocument,
};
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2-135m-instruct";

fn config(base_url: String) -> ApiConfig {
    let mut c = ApiConfig::new(base_url, MODEL);
    // no key is needed by a local server, whatever the environment holds
    c.api_key_env = "LABELFLEET_TEST_NO_KEY".into();
    c.concurrency = 4;
    c.timeout_s = 60.0;
    c.backoff_initial_ms = 100;
    c.backoff_max_ms = 2_000;
    c.max_retries = 4;
    c
}

fn no_progress() {}

/// Spearman's rank correlation (average ranks for ties).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(x: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..x.len()).collect();
        idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// The pairs of the agreement test: 8 Cranfield queries, each with its most relevant judged
/// document and an unrelated one.
fn agreement_pairs() -> Vec<Pair> {
    let pairs = cranfield_pairs(8);
    assert_eq!(pairs.len(), 16);
    pairs
}

/// One line of `labelfleet score` output: what the local engine said about a pair.
#[derive(serde::Deserialize)]
struct LocalGrade {
    id: String,
    distribution: Vec<f32>,
    truncated: bool,
    prompt_version: String,
}

/// The local engine's grades of [`agreement_pairs`]: SmolLM2 in fp32 on the CPU, the
/// dequantised same GGUF the server loads, recorded by `labelfleet score`.
fn local_grades(pairs: &[Pair]) -> Vec<Grading> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/smollm2_local_grades.jsonl"
    );
    let recorded: std::collections::HashMap<String, LocalGrade> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let g: LocalGrade = serde_json::from_str(l).unwrap();
            (g.id.clone(), g)
        })
        .collect();
    assert_eq!(recorded.len(), pairs.len(), "{path}: one line per pair");
    pairs
        .iter()
        .map(|p| {
            let g = recorded
                .get(&p.id)
                .unwrap_or_else(|| panic!("{path}: no grade of pair {}", p.id));
            assert_eq!(g.prompt_version, "grade-v1");
            assert!(!g.truncated, "pair {}: the document was cut locally", p.id);
            Grading::from_distribution(g.distribution.clone())
        })
        .collect()
}

/// Writes the pairs of the agreement test as JSONL to `$LABELFLEET_AGREEMENT_PAIRS`, for the
/// local engine to grade. To record the local grades again (after a change of the engine's
/// numerics or of the `grade-v1` prompt's rendering):
///
/// ```text
/// LABELFLEET_AGREEMENT_PAIRS=/tmp/pairs.jsonl cargo test --release -p labelfleet-openai \
///     --test llama_server -- --ignored --exact write_agreement_pairs
/// labelfleet score --model smollm2 --device cpu --dtype fp32 --max-len 2048 \
///     -i /tmp/pairs.jsonl -o openai/tests/data/smollm2_local_grades.jsonl
/// ```
#[test]
#[ignore = "writes the input of the local grades; see its doc comment"]
fn write_agreement_pairs() {
    let path = std::env::var_os("LABELFLEET_AGREEMENT_PAIRS")
        .expect("LABELFLEET_AGREEMENT_PAIRS: where to write the pairs");
    let lines: Vec<String> = agreement_pairs()
        .iter()
        .map(|p| serde_json::to_string(p).unwrap() + "\n")
        .collect();
    std::fs::write(path, lines.concat()).unwrap();
}

/// The chat template of the bundled SmolLM2, as the local engine detects it.
fn smollm2_template() -> ChatTemplate {
    let path = labelfleet_types::resolve_model("smollm2").join("tokenizer_config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", path.display())),
    )
    .unwrap();
    ChatTemplate::from_jinja(
        config["chat_template"].as_str(),
        config["bos_token"].as_str(),
        config["eos_token"].as_str(),
    )
    .expect("SmolLM2's chat template compiles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grades_agree_with_the_local_engine_on_the_same_weights() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    let server = LlamaServer::start(&bin, 4, 2048);
    let pairs = agreement_pairs();
    // the local engine: the same SmolLM2 weights, converted to fp32
    let local_grades = local_grades(&pairs);

    // the server renders the same prompt bytes as the local engine: ChatML of grade-v1
    let template = smollm2_template();
    assert_eq!(template.end_of_turn(), Some("<|im_end|>"), "{template:?}");
    for p in &pairs {
        let messages = grade_messages(p, 4, strip_special_tokens);
        let body = serde_json::json!({"messages": messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect::<Vec<_>>()});
        let (status, text) =
            common::http_request(server.addr, "POST", "/apply-template", &body.to_string())
                .unwrap();
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["prompt"].as_str().unwrap(),
            template.render(&messages, true).unwrap(),
            "pair {}: the server's prompt differs from the local engine's",
            p.id
        );
    }

    let client = ApiClient::new(config(server.base_url())).unwrap();
    let start = Instant::now();
    let api: Vec<_> = client
        .grade_pairs(&pairs, &no_progress)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let api_secs = start.elapsed().as_secs_f64();

    let mut abs_diff = 0.0f64;
    let mut max_diff = 0.0f64;
    let mut same_grade = 0;
    println!("pair          api expected  local expected  api dist / local dist");
    for ((p, a), l) in pairs.iter().zip(&api).zip(&local_grades) {
        assert_eq!(
            a.source,
            GradeSource::Logprobs,
            "pair {}: graded from text, not logprobs",
            p.id
        );
        assert!(!a.truncated);
        let s: f32 = a.grading.distribution.iter().sum();
        assert!(
            (s - 1.0).abs() < 1e-4,
            "pair {}: distribution sums to {s}",
            p.id
        );
        for (x, y) in a.grading.distribution.iter().zip(&l.distribution) {
            let d = (x - y).abs() as f64;
            abs_diff += d;
            max_diff = max_diff.max(d);
        }
        same_grade += usize::from(a.grading.grade == l.grade);
        println!(
            "{:12}  {:.3}         {:.3}           {:.3?} / {:.3?}",
            p.id, a.grading.expected, l.expected, a.grading.distribution, l.distribution
        );
    }
    let mean_abs_diff = abs_diff / (pairs.len() * 4) as f64;
    let rho = spearman(
        &api.iter()
            .map(|a| a.grading.expected as f64)
            .collect::<Vec<_>>(),
        &local_grades
            .iter()
            .map(|l| l.expected as f64)
            .collect::<Vec<_>>(),
    );
    let usage = client.usage();
    println!(
        "llama-server (Q4_1) vs local engine (fp32) on {} pairs: Spearman of expected grades {rho:.3}, \
         mean |p_api - p_local| {mean_abs_diff:.4} (max {max_diff:.4}), same grade {same_grade}/{}, \
         api {api_secs:.1} s; {}",
        pairs.len(),
        pairs.len(),
        usage.summary()
    );
    // The weights are the same numbers: the local fp32 model is the dequantised Q4_1 GGUF the
    // server loads. What differs is arithmetic: llama.cpp quantises activations to 8 bits for
    // its Q4_1 matrix products and keeps the KV cache in f16, and its results shift a little
    // with how requests are batched (4 slots, prompt-cache reuse). Measured on five runs:
    // Spearman 0.93-0.97, mean |dp| 0.008-0.011, max |dp| 0.033-0.039, same grade 15-16/16. The
    // bounds leave room for that jitter and still catch a wrong prompt, template or reading:
    // on one pair, dropping "the grade only" from the last system line moved the distribution
    // by 0.059 at most (0.038 on average), dropping "(0-3)" by 0.22, another system turn by 0.30.
    assert!(rho >= 0.85, "Spearman {rho:.3} < 0.85");
    assert!(
        mean_abs_diff <= 0.025,
        "mean abs diff {mean_abs_diff:.4} > 0.025"
    );
    assert!(max_diff <= 0.08, "max abs diff {max_diff:.4} > 0.08");
    assert!(same_grade >= 14, "same grade on only {same_grade}/16 pairs");
    assert_eq!(usage.requests, 16);
    assert_eq!(usage.retries + usage.failures + usage.cache_hits, 0);
    assert!(usage.prompt_tokens > 16 * 150, "{usage:?}");
    assert_eq!(usage.completion_tokens, 16);
}

fn cranfield_docs(n: usize) -> Vec<SeedDocument> {
    cranfield_pairs(n)
        .into_iter()
        .step_by(2)
        .map(|p| SeedDocument {
            id: p.id.split_once("-d").map(|(_, d)| d.to_string()).unwrap(),
            title: p.title,
            body: p.body,
            metadata: p.metadata,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthesis_writes_clean_distinct_queries_reproducibly_from_seeds() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    // One slot and no prompt-cache reuse: every request is computed alone and from scratch,
    // so the server's arithmetic, and with the seed its sampling, repeat exactly.
    let server = LlamaServer::start_with(&bin, 1, 2048, &["--no-cache-prompt"]);
    let proxy = Proxy::start(server.addr, |_, _| Action::Forward).await;
    // SmolLM2-135M mostly answers with the title, and the engine's rules drop a copied span of
    // 8 words or more: documents with short titles (and an author) give it a fair chance
    let docs: Vec<SeedDocument> = common::cranfield_seed_documents()
        .into_iter()
        .filter(|d| {
            let words = d.title.as_deref().unwrap_or("").split_whitespace().count();
            (3..=7).contains(&words) && d.metadata.contains_key("author")
        })
        .take(3)
        .collect();
    let params = SamplingParams {
        max_new_tokens: 32,
        temperature: 0.8,
        top_p: 0.95,
        seed: 11,
    };
    let client = ApiClient::new(config(proxy.base_url())).unwrap();
    let results = client.synthesize(&docs, 6, 1, &params, &no_progress).await;
    assert_eq!(results.len(), 3);
    for (doc, r) in docs.iter().zip(&results) {
        let queries = r.as_ref().unwrap();
        println!(
            "document {}: {:?}",
            doc.id,
            queries.iter().map(|q| &q.query).collect::<Vec<_>>()
        );
        assert!(!queries.is_empty(), "document {}: no usable query", doc.id);
        let mut seen = std::collections::HashSet::new();
        for q in queries {
            assert_eq!(q.doc_id, doc.id);
            assert_eq!(
                clean_query(&q.query, doc).as_deref(),
                Some(q.query.as_str()),
                "already clean"
            );
            match &q.metadata_field {
                None => assert_eq!(q.prompt_version, "query-v1"),
                Some(field) => {
                    assert_eq!(q.prompt_version, "query-meta-v1");
                    assert!(mentions_value(&q.query, &doc.metadata[field]), "{q:?}");
                }
            }
            assert!(
                seen.insert(q.query.to_lowercase()),
                "duplicate {:?}",
                q.query
            );
        }
    }
    // one request per query (6 topic, 1 metadata for a document with an author), each with the
    // seed derived from (document, index, run seed)
    let per_doc: Vec<usize> = docs.iter().map(|d| sample_intents(d, 6, 1).len()).collect();
    assert_eq!(per_doc, vec![7, 7, 7]);
    let seen = proxy.seen();
    assert_eq!(seen.len(), per_doc.iter().sum::<usize>());
    let mut expected: Vec<u64> = docs
        .iter()
        .zip(&per_doc)
        .flat_map(|(d, &n)| (0..n).map(|i| request_seed(&d.id, i, 11)))
        .collect();
    let mut sent: Vec<u64> = seen
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(v["temperature"], 0.8);
            assert_eq!(v["top_p"], 0.95);
            assert_eq!(v["max_tokens"], 32);
            v["seed"].as_u64().unwrap()
        })
        .collect();
    expected.sort();
    sent.sort();
    assert_eq!(sent, expected);
    assert_eq!(client.usage().requests as usize, seen.len());

    // a re-run without any cache asks the same seeds and, from this server, gets the same
    // queries back
    let again = ApiClient::new(config(server.base_url()))
        .unwrap()
        .synthesize(&docs, 6, 1, &params, &no_progress)
        .await;
    for (a, b) in results.iter().zip(&again) {
        assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_client_errors_are_not() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    // a small context, so that a long document is refused by the server itself with a 400
    let server = LlamaServer::start(&bin, 4, 1024);
    let mut pairs = cranfield_pairs(3);
    let too_long = Pair {
        id: "q-too-long".into(),
        query: "boundary layer transition".into(),
        title: Some("a very long report".into()),
        body: "the boundary layer on a flat plate in supersonic flow . ".repeat(200),
        metadata: Default::default(),
    };
    pairs.insert(2, too_long);
    let faults = std::sync::atomic::AtomicUsize::new(0);
    // the first three requests that are not the long pair get 429, 429, 503
    let proxy = Proxy::start(server.addr, move |_, body| {
        if body.contains("very long report") {
            return Action::Forward;
        }
        match faults.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 | 1 => Action::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#.into(),
            },
            2 => Action::Respond {
                status: 503,
                headers: vec![],
                body: r#"{"error":{"message":"Loading model","code":503}}"#.into(),
            },
            _ => Action::Forward,
        }
    })
    .await;
    let client = ApiClient::new(config(proxy.base_url())).unwrap();
    let start = Instant::now();
    let results = client.grade_pairs(&pairs, &no_progress).await;
    let secs = start.elapsed().as_secs_f64();

    assert_eq!(results.len(), 7);
    for (p, r) in pairs.iter().zip(&results) {
        if p.id == "q-too-long" {
            continue;
        }
        let g = r.as_ref().unwrap_or_else(|e| panic!("pair {}: {e}", p.id));
        assert_eq!(g.source, GradeSource::Logprobs);
    }
    let err = results[2].as_ref().unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    match err {
        ApiError::Status {
            record,
            status,
            attempts,
            message,
        } => {
            assert_eq!(record, "pair q-too-long");
            assert_eq!((*status, *attempts), (400, 1));
            assert!(
                message.contains("context"),
                "the server's message: {message}"
            );
        }
        other => panic!("expected an HTTP 400 error, got {other:?}"),
    }
    assert!(
        msg.contains("pair q-too-long") && msg.contains("HTTP 400"),
        "{msg}"
    );

    let usage = client.usage();
    let seen = proxy.seen();
    let long_requests = seen
        .iter()
        .filter(|s| s.body.contains("very long report"))
        .count();
    assert_eq!(long_requests, 1, "a 400 is not retried");
    assert_eq!(usage.retries, 3, "{usage:?}");
    assert_eq!(usage.requests, 7 + 3);
    assert_eq!(usage.requests as usize, proxy.requests());
    assert_eq!(usage.failures, 1);
    assert_eq!(
        seen.iter().filter(|s| s.status == 429).count(),
        2,
        "{:?}",
        seen.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    // Retry-After: 1 was honoured
    assert!(secs >= 1.0, "took {secs:.2} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_is_answered_by_the_cache_with_no_request() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    let server = LlamaServer::start(&bin, 4, 2048);
    let proxy = Proxy::start(server.addr, |_, _| Action::Forward).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("api-cache.jsonl");
    let pairs = cranfield_pairs(3);
    let docs = cranfield_docs(1);
    let params = SamplingParams {
        max_new_tokens: 24,
        temperature: 0.7,
        top_p: 0.9,
        seed: 3,
    };

    let first = ApiClient::new(config(proxy.base_url()))
        .unwrap()
        .with_cache(&cache)
        .unwrap();
    let grades_1: Vec<_> = first
        .grade_pairs(&pairs, &no_progress)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let queries_1 = first.synthesize(&docs, 2, 0, &params, &no_progress).await;
    let sent = proxy.requests();
    assert_eq!(sent, 6 + 2);
    assert_eq!(first.usage().cache_hits, 0);

    // a new client on the same cache file, as a re-run would make
    let second = ApiClient::new(config(proxy.base_url()))
        .unwrap()
        .with_cache(&cache)
        .unwrap();
    let grades_2: Vec<_> = second
        .grade_pairs(&pairs, &no_progress)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let queries_2 = second.synthesize(&docs, 2, 0, &params, &no_progress).await;
    assert_eq!(proxy.requests(), sent, "the re-run sent requests");
    assert_eq!(grades_1, grades_2);
    assert_eq!(
        queries_1[0].as_ref().unwrap(),
        queries_2[0].as_ref().unwrap()
    );
    let usage = second.usage();
    assert_eq!(usage.requests, 0);
    assert_eq!(usage.cache_hits, 8);
    assert_eq!(usage.prompt_tokens + usage.completion_tokens, 0);
    assert_eq!(usage.cost_usd, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_fails_only_its_pair() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    let server = LlamaServer::start(&bin, 4, 2048);
    let pairs = cranfield_pairs(3);
    let victim = pairs[3].clone();
    let marker = victim.query.clone();
    let proxy = Proxy::start(server.addr, move |_, body| {
        if body.contains(&marker) && body.contains(victim.title.as_deref().unwrap_or("")) {
            Action::Respond {
                status: 200,
                headers: vec![],
                body: r#"{"choices": [{"message": {"content": "2"#.into(),
            }
        } else {
            Action::Forward
        }
    })
    .await;
    let client = ApiClient::new(config(proxy.base_url())).unwrap();
    let results = client.grade_pairs(&pairs, &no_progress).await;
    for (i, (p, r)) in pairs.iter().zip(&results).enumerate() {
        if i == 3 {
            let e = r.as_ref().unwrap_err();
            println!("{e}");
            assert!(matches!(e, ApiError::Malformed { .. }), "{e:?}");
            assert!(e.to_string().contains(&format!("pair {}", p.id)), "{e}");
        } else {
            let g = r.as_ref().unwrap_or_else(|e| panic!("pair {}: {e}", p.id));
            assert_eq!(g.source, GradeSource::Logprobs);
        }
    }
    // not retried, and counted
    assert_eq!(proxy.requests(), 6);
    assert_eq!(client.usage().failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_and_is_retried() {
    let Some(bin) = llama_server_bin() else {
        return;
    };
    let server = LlamaServer::start(&bin, 1, 2048);
    // the first request gets no answer at all; the rest are forwarded
    let proxy = Proxy::start(server.addr, |n, _| {
        if n == 0 {
            Action::Stall(Duration::from_secs(30))
        } else {
            Action::Forward
        }
    })
    .await;
    let mut c = config(proxy.base_url());
    c.timeout_s = 10.0;
    c.concurrency = 1;
    let client = ApiClient::new(c).unwrap();
    let pairs = cranfield_pairs(1);
    let start = Instant::now();
    let results = client.grade_pairs(&pairs, &no_progress).await;
    let secs = start.elapsed().as_secs_f64();
    for r in &results {
        assert_eq!(r.as_ref().unwrap().source, GradeSource::Logprobs);
    }
    let usage = client.usage();
    assert_eq!((usage.requests, usage.retries, usage.failures), (3, 1, 0));
    assert_eq!(proxy.requests(), 3);
    // it waited for the timeout, not for the stall
    assert!((10.0..30.0).contains(&secs), "took {secs:.1} s");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_named() {
    // a port with nothing behind it: connect errors every time
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(format!("http://127.0.0.1:{port}/v1"));
    c.max_retries = 2;
    c.backoff_initial_ms = 10;
    let client = ApiClient::new(c).unwrap();
    let pair = Pair {
        id: "q1-d1".into(),
        query: "q".into(),
        title: None,
        body: "b".into(),
        metadata: Default::default(),
    };
    let start = Instant::now();
    let e = client.grade_pair(&pair).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    let msg = e.to_string();
    assert!(
        matches!(e, ApiError::Transport { attempts: 3, .. }),
        "{e:?}"
    );
    assert!(
        msg.contains("pair q1-d1") && msg.contains("connect"),
        "{msg}"
    );
    let usage = client.usage();
    assert_eq!((usage.requests, usage.retries, usage.failures), (3, 2, 1));
}
