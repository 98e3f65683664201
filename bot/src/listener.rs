//! Serving a router on a TCP listener, over plain HTTP/1.1 or over TLS (HTTP/1.1 or HTTP/2 by
//! ALPN), with the limits that keep slow or idle clients from holding connections open:
//!
//! - **header read** (`--header-read-timeout`): a connection must send a complete request head
//!   this soon after it is accepted (or, for HTTP/1.1, after the previous response: hyper starts
//!   the timer whenever it waits for a head, so it also closes idle keep-alive connections);
//! - **body read** (`--body-read-timeout`): a request's body must arrive whole this soon after
//!   its head, however steadily it trickles (the handler reading it gets an
//!   `io::ErrorKind::TimedOut` error and answers 408);
//! - **idle** (`--idle-timeout`): a connection with no request in flight for this long is
//!   closed (HTTP/2 connections, which have no head timer once they are open).
//!
//! The public and the internal listener are both served here; so is every test that binds a
//! listener "the way `countersign bot` does". Shutdown is graceful: stop accepting, let open
//! requests finish for up to [`SHUTDOWN_GRACE`], then close what is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt as _;

/// Default of `--header-read-timeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--body-read-timeout`: a 25 MB delivery at well under 1 MB/s still fits.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--idle-timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Pause after a failed `accept` (e.g. too many open files) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long clients may take; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Until a complete request head (also bounds the TLS handshake).
    pub header_read: Duration,
    /// Until a request's whole body, from its head.
    pub body_read: Duration,
    /// With no request in flight.
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            body_read: BODY_READ_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// Which limit closed a connection or ended a request: the `timeout` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// No complete request head in time.
    HeaderRead,
    /// A request body not whole in time.
    BodyRead,
    /// No request for too long.
    Idle,
}

impl Timeout {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderRead => "header_read",
            Self::BodyRead => "body_read",
            Self::Idle => "idle",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    timeout: &'static str,
}

/// `http_timeouts`: connections closed and request bodies cut off by a limit, by listener.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    timeouts: Family<TimeoutLabels, Counter>,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "http_timeouts",
            "Connections closed, or request bodies cut off, by a listener's time limit",
            metrics.timeouts.clone(),
        );
        metrics
    }

    /// How many times `timeout` struck on `listener`.
    pub fn count(&self, listener: &'static str, timeout: Timeout) -> u64 {
        self.counter(listener, timeout).get()
    }

    fn counter(&self, listener: &'static str, timeout: Timeout) -> Counter {
        self.timeouts
            .get_or_create(&TimeoutLabels {
                listener,
                timeout: timeout.as_str(),
            })
            .clone()
    }
}

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// The listener's name in logs and metrics (`public`, `internal`).
    pub name: &'static str,
    /// Serve TLS with this configuration instead of plain HTTP/1.1.
    pub tls: Option<Arc<ServerConfig>>,
    /// The time limits.
    pub limits: ConnectionLimits,
    /// Where timeouts are counted.
    pub metrics: ConnectionMetrics,
}

impl ListenerOptions {
    /// Plain HTTP with the default limits, counted in unregistered metrics.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            tls: None,
            limits: ConnectionLimits::default(),
            metrics: ConnectionMetrics::default(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits up to
/// [`SHUTDOWN_GRACE`] for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = Arc::new(Server::new(app, &options));
    let acceptor = options.tls.map(TlsAcceptor::from);
    let (stop, stopping) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, listener = server.name, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let stopping = stopping.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let Some(acceptor) = acceptor else {
                return server.drive(stream, false, stopping).await;
            };
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(server.limits.header_read, handshake).await {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    server.drive(tls, h2, stopping).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => {
                    server.count(Timeout::HeaderRead);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::warn!(
            listener = server.name,
            "open connections did not finish in time; closing them"
        );
    }
    Ok(())
}

/// Most bytes one HTTP/1 connection buffers while reading. hyper's default, about 400 KiB,
/// lets a connection streaming 24 KB webhook bodies grow its buffer to 64 KiB and keep it:
/// 250 MiB at 4,000 connections (docs/benchmarks.md, "with real work"). 16 KiB holds any
/// request head worth reading (a larger one is answered 431); bodies pass through in chunks.
pub const READ_BUFFER_MAX: usize = 16 * 1024;

/// What every connection of one listener shares.
struct Server {
    name: &'static str,
    app: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Server {
    fn new(app: Router, options: &ListenerOptions) -> Self {
        let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.limits.header_read)
            .max_buf_size(READ_BUFFER_MAX);
        let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        http2.http2().timer(TokioTimer::new());
        Self {
            name: options.name,
            app,
            limits: options.limits,
            metrics: options.metrics.clone(),
            http1,
            http2,
        }
    }

    fn count(&self, timeout: Timeout) {
        self.metrics.counter(self.name, timeout).inc();
    }

    /// Serves one connection until it ends, a limit closes it, or the server stops.
    async fn drive<I>(&self, io: I, h2: bool, mut stopping: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (busy, activity) = watch::channel(0_usize);
        let busy = Arc::new(busy);
        let app = self.app.clone();
        let body_read = self.limits.body_read;
        let body_timeouts = self.metrics.counter(self.name, Timeout::BodyRead);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(busy.clone());
            let request =
                request.map(|body| DeadlineBody::new(body, body_read, body_timeouts.clone()));
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
        let builder = if h2 { &self.http2 } else { &self.http1 };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            timeout = overstay(activity, self.limits) => {
                self.count(timeout);
                tracing::debug!(listener = self.name, timeout = timeout.as_str(), "closing a connection");
                conn.as_mut().graceful_shutdown();
                // Nothing is in flight: this ends at once, unless a request slipped in.
                let _ = tokio::time::timeout(self.limits.idle, conn.as_mut()).await;
                return;
            }
            () = stopped(&mut stopping) => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        };
        if let Err(error) = ended {
            if error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                self.count(Timeout::HeaderRead);
            }
            tracing::debug!(%error, listener = self.name, "connection ended with an error");
        }
    }
}

/// Completes when the server stops.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Completes when the connection has had no request in flight for too long: the header-read
/// limit before its first request, the idle limit after. `activity` holds the number of
/// requests in flight; every start and end of a request is a change.
async fn overstay(mut activity: watch::Receiver<usize>, limits: ConnectionLimits) -> Timeout {
    let mut allowed = (limits.header_read, Timeout::HeaderRead);
    loop {
        if activity
            .wait_for(|in_flight| *in_flight == 0)
            .await
            .is_err()
        {
            return std::future::pending().await; // the connection is gone
        }
        match tokio::time::timeout(allowed.0, activity.changed()).await {
            Err(_) => return allowed.1,
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(())) => allowed = (limits.idle, Timeout::Idle),
        }
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(busy: Arc<watch::Sender<usize>>) -> Self {
        busy.send_modify(|n| *n += 1);
        Self(busy)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A request body that fails with `io::ErrorKind::TimedOut` when it is not whole by its
/// deadline, however steadily it arrives.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    within: Duration,
    timeouts: Option<Counter>,
}

impl DeadlineBody {
    fn new(inner: Incoming, within: Duration, timeouts: Counter) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
            within,
            timeouts: Some(timeouts),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(counter) = self.timeouts.take() {
            counter.inc();
        }
        let error = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("request body not received within {:?}", self.within),
        );
        Poll::Ready(Some(Err(error.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
