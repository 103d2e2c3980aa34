//! Metrics of every role through `prometheus-client` (the Prometheus project's Rust library),
//! served over plain HTTP at `GET /metrics` in the OpenMetrics text format:
//!
//! - [`Exposition`]: a role's registry of counters, gauges and labeled families;
//! - [`GrpcMetricsLayer`]: a tower layer on a role's gRPC server that counts every call by
//!   method and status code and records its latency in a histogram;
//! - [`serve`]: the HTTP responder (bounded connections and time).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
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
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A monotonically increasing counter (a `prometheus-client` counter, shareable).
#[derive(Debug, Default, Clone)]
pub struct Counter(prometheus_client::metrics::counter::Counter);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge of f64 values, set when metrics are read.
pub type GaugeF64 = Gauge<f64, AtomicU64>;

/// One role's metrics: a registry that renders in the OpenMetrics text format.
#[derive(Default)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a counter; `name` ends in `_total`, as it is exported.
    pub fn counter(&mut self, name: &str, help: &str, counter: &Counter) {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.registry.register(base, help, counter.0.clone());
    }

    /// Registers a gauge and returns it, to be set before each rendering.
    pub fn gauge(&mut self, name: &str, help: &str) -> GaugeF64 {
        let gauge = GaugeF64::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// Registers any metric (a labeled family, a histogram).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

/// Latency buckets of gRPC calls and tasks, seconds: 1 ms to about 9 minutes.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 15))
}

/// The labels of a gRPC call: its method (`Service/Method`) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub code: Code,
}

/// The labels of a gRPC call's latency: its method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// A gRPC status code as a label value (`Ok`, `NotFound`, ...), or `Transport` when the
/// transport failed before any status.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Code(Option<tonic::Code>);

impl Code {
    pub const OK: Code = Code(Some(tonic::Code::Ok));
    pub const TRANSPORT: Code = Code(None);

    fn from_grpc_status(value: &str) -> Code {
        Code(Some(tonic::Code::from_bytes(value.as_bytes())))
    }

    fn is_unimplemented(self) -> bool {
        self.0 == Some(tonic::Code::Unimplemented)
    }
}

impl EncodeLabelValue for Code {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self.0 {
            Some(code) => write!(encoder, "{code:?}"),
            None => encoder.write_str("Transport"),
        }
    }
}

/// Calls and latencies of one gRPC server.
#[derive(Clone)]
pub struct GrpcMetrics {
    calls: Family<CallLabels, prometheus_client::metrics::counter::Counter>,
    seconds: Family<MethodLabels, Histogram>,
    /// Methods this server serves: any other path is labeled `unknown`, so a caller cannot
    /// grow the label set.
    known: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl GrpcMetrics {
    /// Registers `labelfleet_grpc_server_calls_total{method,code}` and
    /// `labelfleet_grpc_server_seconds{method}` (a histogram) in `exposition`; `services` are
    /// the fully qualified gRPC services served (their methods are labeled by name).
    pub fn register(exposition: &mut Exposition, services: &[&str]) -> Self {
        let metrics = GrpcMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            known: Arc::new(Mutex::new(services.iter().map(|s| s.to_string()).collect())),
        };
        exposition.register(
            "labelfleet_grpc_server_calls",
            "gRPC calls answered, by method and status code (a status sent after a stream's first message counts as OK)",
            metrics.calls.clone(),
        );
        exposition.register(
            "labelfleet_grpc_server_seconds",
            "Seconds from a gRPC call's arrival to its response headers (a unary call's whole time)",
            metrics.seconds.clone(),
        );
        metrics
    }

    /// The tower layer that records every call of a server.
    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer(self.clone())
    }

    fn method_label(&self, path: &str) -> String {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match known.contains(service) {
            true => path.trim_start_matches('/').to_string(),
            false => "unknown".to_string(),
        }
    }

    fn observe(&self, method: String, code: Code, seconds: f64) {
        // a method no service has: one label for all, whatever the caller sent
        let method = match code.is_unimplemented() {
            true => "unknown".to_string(),
            false => method,
        };
        self.calls
            .get_or_create(&CallLabels {
                method: method.clone(),
                code,
            })
            .inc();
        self.seconds
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }
}

/// Records each call's method, status code and latency (see [`GrpcMetrics`]).
#[derive(Clone)]
pub struct GrpcMetricsLayer(GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method_label(req.uri().path());
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                // an error answer carries its status in the headers (trailers-only); an answer
                // that streams carries it in the trailers, after this point
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map_or(Code::OK, Code::from_grpc_status),
                Err(_) => Code::TRANSPORT,
            };
            metrics.observe(method, code, start.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_and_unknown_methods_share_one_label() {
        let mut e = Exposition::new();
        let c = Counter::default();
        e.counter("labelfleet_things_total", "Things", &c);
        c.add(3);
        let g = GrpcMetrics::register(&mut e, &["labelfleet.v1.JobService"]);
        let method = g.method_label("/labelfleet.v1.JobService/GetJob");
        g.observe(method, Code::from_grpc_status("5"), 0.002);
        let unimplemented = Code::from_grpc_status("12");
        g.observe(g.method_label("/evil.Service/x"), unimplemented, 0.001);
        let nope = g.method_label("/labelfleet.v1.JobService/Nope");
        g.observe(nope, unimplemented, 0.001);
        let text = e.encode();
        assert!(text.contains("labelfleet_things_total 3"), "{text}");
        assert!(
            text.contains(r#"labelfleet_grpc_server_calls_total{method="labelfleet.v1.JobService/GetJob",code="NotFound"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"labelfleet_grpc_server_calls_total{method="unknown",code="Unimplemented"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"labelfleet_grpc_server_seconds_bucket{le="0.0025",method="labelfleet.v1.JobService/GetJob"} 1"#)
                || text.contains(r#"labelfleet_grpc_server_seconds_bucket{method="labelfleet.v1.JobService/GetJob",le="0.0025"} 1"#),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert_eq!(Code::from_grpc_status("0"), Code::OK);
        assert_eq!(
            Code::from_grpc_status("99"),
            Code(Some(tonic::Code::Unknown))
        );
    }
}
