//! Prometheus text exposition over plain HTTP (`GET /metrics`), shared by every role.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Renders the current metrics in the Prometheus text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `render()` at `/metrics` until the process exits. Returns the bound address.
pub async fn serve(addr: SocketAddr, render: Render) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let open = Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            // Over the limit, the connection is closed at once: a scraper retries next period.
            let Ok(permit) = open.clone().try_acquire_owned() else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let answered = tokio::time::timeout(METRICS_TIMEOUT, respond(sock, render));
                if answered.await.is_err() {
                    tracing::debug!("metrics request timed out");
                }
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// Most metrics connections served at once.
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// How long one metrics connection may take, read and write (a client that sends nothing is
/// dropped then).
pub const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn respond(mut sock: tokio::net::TcpStream, render: Render) {
    let mut buf = [0u8; 2048];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if request.starts_with("GET /metrics") {
        ("200 OK", render())
    } else {
        ("404 Not Found", "only /metrics is served\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Appends one metric with its HELP and TYPE lines.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
