//! What every Countersign server shares for operations: the log set-up behind
//! `--log-format text|json` (colour only on a terminal), `countersign_build_info`, and the
//! standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_start_time_seconds`, …) that Prometheus' own clients export.
//!
//! The controller, the bot (and the gateway) register [`register_common`] in the root of
//! their registries, so these names carry no per-binary prefix.

use std::io::IsTerminal as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// How log lines are written (`--log-format`, `COUNTERSIGN_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log pipelines.
    Json,
}

/// The default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Initialises `tracing` once for the process: `RUST_LOG` (default [`DEFAULT_FILTER`]) as the
/// filter, lines on stderr in `format`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already initialised (tests, or a library caller): keep the existing subscriber.
    drop(result);
}

/// Flushes and stops the OTLP exporter when dropped (keep it until the process ends).
#[cfg(feature = "otlp")]
pub struct OtlpGuard(opentelemetry_sdk::trace::SdkTracerProvider);

#[cfg(feature = "otlp")]
impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("cannot flush the OTLP trace exporter: {error}");
        }
    }
}

/// [`init_logging`] plus OpenTelemetry: every `tracing` span (reconciles, webhook deliveries)
/// is exported over OTLP/HTTP to `endpoint` (e.g. `http://otel-collector:4318/v1/traces`) by a
/// background batch processor, as service `service`.
#[cfg(feature = "otlp")]
pub fn init_logging_with_otlp(
    format: LogFormat,
    endpoint: &str,
    service: &'static str,
) -> Result<OtlpGuard, String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    drop(result);
    Ok(OtlpGuard(provider))
}

/// The version this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Registers `countersign_build_info{version,component}` (always 1) and the process
/// metrics in `registry`, which should be the root (unprefixed) registry.
pub fn register_common(registry: &mut Registry, component: &'static str) {
    let build_info = Family::<Vec<(&'static str, String)>, Gauge>::default();
    build_info
        .get_or_create(&vec![
            ("version", VERSION.to_owned()),
            ("component", component.to_owned()),
            (
                "rustc",
                option_env!("RUSTC_VERSION").unwrap_or("unknown").to_owned(),
            ),
        ])
        .set(1);
    registry.register(
        "countersign_build_info",
        "Countersign build: version and component; always 1",
        build_info,
    );
    registry.register_collector(Box::new(ProcessCollector));
}

/// Reads `/proc/self` at every scrape (Linux; elsewhere nothing is exported).
#[derive(Debug, Default)]
struct ProcessCollector;

/// What the process metrics read from `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub resident_bytes: u64,
    /// Virtual memory in bytes.
    pub virtual_bytes: u64,
    /// Start time in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit of file descriptors.
    pub max_fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Parses `/proc/self/stat` (after the command name) with the clock tick and page size, plus
/// the boot time from `/proc/stat`.
pub fn parse_stat(stat: &str, boot_time: f64, ticks: f64, page_size: u64) -> Option<ProcessStats> {
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5) minus 3 (pid, comm and state precede `rest`'s first field).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let start = field(22)?;
    let vsize = field(23)?;
    let rss = field(24)?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: rss * page_size,
        virtual_bytes: vsize,
        start_time_seconds: boot_time + start as f64 / ticks,
        threads,
        ..ProcessStats::default()
    })
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    // Linux's USER_HZ and page size on every architecture Countersign ships for.
    let mut stats = parse_stat(&stat, boot_time, 100.0, 4096)?;
    stats.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    stats.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(stats)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = read_process_stats() else {
            return Ok(());
        };
        let counter = ConstCounter::new(stats.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                stats.max_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                stats.threads as f64,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "otlp")]
    #[test]
    fn spans_are_exported_over_otlp_http() {
        use std::io::{Read as _, Write as _};
        // A one-shot OTLP collector on loopback: answers 200 to the first export request.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .expect("answer");
            String::from_utf8_lossy(&request).into_owned()
        });
        let guard = super::init_logging_with_otlp(
            super::LogFormat::Text,
            &format!("http://{addr}/v1/traces"),
            "countersign-test",
        )
        .expect("exporter");
        tracing::info_span!("reconcile", kind = "RiskPolicy").in_scope(|| {
            tracing::info!("inside a span");
        });
        drop(guard); // flushes
        let request = collector.join().expect("collector");
        assert!(request.starts_with("POST /v1/traces"), "{request}");
        assert!(request.contains("application/x-protobuf"), "{request}");
        assert!(
            request.contains("countersign-test"),
            "service name in the resource"
        );
        assert!(request.contains("reconcile"), "the span's name");
    }

    use super::*;

    #[test]
    fn proc_stat_is_parsed_past_a_command_with_spaces() {
        // proc(5) fields 1..=24 of a process named "count ersign" (utime 250, stime 50 ticks,
        // 7 threads, started 1000 ticks after boot, 8 MiB virtual, 300 resident pages).
        let stat = "42 (count ersign) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 8388608 300 18446744073709551615";
        let stats = parse_stat(stat, 1_700_000_000.0, 100.0, 4096).expect("parses");
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.threads, 7);
        assert_eq!(stats.start_time_seconds, 1_700_000_010.0);
        assert_eq!(stats.virtual_bytes, 8_388_608);
        assert_eq!(stats.resident_bytes, 300 * 4096);
    }

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let mut registry = Registry::default();
        register_common(&mut registry, "controller");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(&format!(
                "countersign_build_info{{version=\"{VERSION}\",component=\"controller\""
            )),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
