//! Watches: replay of history from a resourceVersion (or a synthetic ADDED snapshot for
//! rv unset/"0"/sendInitialEvents), then live changes from the broadcast, with selectors
//! (objects leaving the selector become DELETED), bookmarks, timeouts, 410 for compacted
//! history, fault-injected drops and Table-wrapped events for kubectl.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::error::ApiError;
use super::selectors::Selectors;
use super::store::{EventType, ResourceDef, State, WatchRecord};
use super::table::Rendering;

/// What a watch request asked for.
pub struct WatchReq {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub ns: Option<String>,
    pub sel: Selectors,
    pub rv: Option<String>,
    pub bookmarks: bool,
    pub send_initial: bool,
    pub timeout: Option<Duration>,
    pub render: Rendering,
}

/// Default watch length when the client sets no timeoutSeconds.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

impl WatchReq {
    /// The served event for a history record, after selector filtering.
    fn transform(&self, rec: &WatchRecord) -> Option<(&'static str, Value)> {
        if rec.res != self.def.storage || self.ns.as_deref().is_some_and(|n| n != rec.ns) {
            return None;
        }
        let new = self.def.to_wire(&self.version, &rec.obj);
        let old_matches = rec
            .old
            .as_ref()
            .is_some_and(|o| self.sel.matches(&self.def.to_wire(&self.version, o)));
        let new_matches = self.sel.matches(&new);
        let kind = match rec.kind {
            EventType::Added if new_matches => "ADDED",
            EventType::Modified if old_matches && new_matches => "MODIFIED",
            EventType::Modified if new_matches => "ADDED",
            EventType::Modified if old_matches => "DELETED",
            EventType::Deleted if new_matches || old_matches => "DELETED",
            _ => return None,
        };
        Some((kind, new))
    }

    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let obj = match kind {
            "BOOKMARK" | "ERROR" => obj,
            _ => self.render.one(&self.def, &self.version, obj),
        };
        let mut s = json!({"type": kind, "object": obj}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line("BOOKMARK", json!({"kind": self.def.kind, "apiVersion": self.def.api_version(&self.version), "metadata": meta}))
    }
}

fn expired(from: u64, horizon: u64) -> Value {
    ApiError::expired(format!("too old resource version: {from} ({horizon})")).status()
}

/// The first lines of the stream and the rv they bring the client to, computed under the lock.
fn prelude(st: &State, req: &WatchReq) -> Result<(Vec<Bytes>, u64), Bytes> {
    let mut lines = Vec::new();
    let from = match req.rv.as_deref() {
        Some(rv) if !rv.is_empty() && rv != "0" && !req.send_initial => {
            Some(rv.parse::<u64>().map_err(|_| {
                req.line(
                    "ERROR",
                    ApiError::bad_request(format!("invalid resource version \"{rv}\"")).status(),
                )
            })?)
        }
        _ => None,
    };
    match from {
        Some(from) => {
            if from < st.horizon {
                return Err(req.line("ERROR", expired(from, st.horizon)));
            }
            for rec in st.history.iter().filter(|r| r.rv > from) {
                if let Some((kind, obj)) = req.transform(rec) {
                    lines.push(req.line(kind, obj));
                }
            }
            Ok((lines, st.rv.max(from)))
        }
        None => {
            for obj in st.list(&req.def.storage, req.ns.as_deref()) {
                let wire = req.def.to_wire(&req.version, obj);
                if req.sel.matches(&wire) {
                    lines.push(req.line("ADDED", wire));
                }
            }
            if req.send_initial && req.bookmarks {
                lines.push(req.bookmark(st.rv, true));
            }
            Ok((lines, st.rv))
        }
    }
}

/// Starts a watch and returns the streaming body.
pub fn start(shared: Arc<Shared>, req: WatchReq) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let (prelude, rx_events) = {
        let st = shared.state.lock().expect("state mutex poisoned");
        (prelude(&st, &req), st.tx.subscribe())
    };
    let mut drop_rx = shared.faults.drop_receiver();
    let bookmark_every = shared.bookmark_interval();
    tokio::spawn(async move {
        let (lines, last) = match prelude {
            Ok(p) => p,
            Err(err_line) => {
                let _ = tx.send(Ok(err_line)).await;
                return;
            }
        };
        for l in lines {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        stream_live(req, tx, rx_events, last, &mut drop_rx, bookmark_every).await;
    });
    Body::from_stream(ReceiverStream::new(rx))
}

async fn stream_live(
    req: WatchReq,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut events: broadcast::Receiver<Arc<WatchRecord>>,
    mut last: u64,
    drop_rx: &mut tokio::sync::watch::Receiver<u64>,
    bookmark_every: Duration,
) {
    let deadline = tokio::time::sleep(req.timeout.unwrap_or(DEFAULT_WATCH_TIMEOUT));
    tokio::pin!(deadline);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
    drop_rx.borrow_and_update();
    loop {
        let line = tokio::select! {
            rec = events.recv() => match rec {
                Ok(rec) => {
                    if rec.rv <= last {
                        continue;
                    }
                    last = rec.rv;
                    match req.transform(&rec) {
                        Some((kind, obj)) => req.line(kind, obj),
                        None => continue,
                    }
                }
                // A watcher that fell behind is closed, as the real server closes slow
                // watchers; the client re-watches from the last rv it saw.
                Err(_) => return,
            },
            _ = ticker.tick(), if req.bookmarks => req.bookmark(last, false),
            _ = &mut deadline => return,
            _ = drop_rx.changed() => return,
            _ = tx.closed() => return,
        };
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
}
