//! A fake kube-apiserver over plain HTTP on loopback that unmodified `kube::Client`, `Api`,
//! `watcher`, `Controller` and the real `kubectl` drive.
//!
//! Objects of any resource live as JSON in one store with a global resourceVersion; the server
//! implements the apiserver semantics controllers depend on (watch from a resourceVersion with
//! bookmarks and 410 after compaction, selectors, pagination, merge/JSON/strategic patches,
//! server-side apply with managedFields and conflicts, status subresources, `pods/binding`, generation,
//! finalizers and owner-reference cascade, schema pruning/defaulting/validation of custom
//! resources via [`crate::schema`], server-side Table printing) plus fault injection.
//!
//! Known approximations (each differs from a real cluster in a way tests should not rely on):
//! - discovery is the legacy (non-aggregated) form; there is no `/openapi/v2` (404), and the
//!   OpenAPI v3 documents carry only PATCH/PUT/GET/DELETE operations and CRD schemas;
//! - pods are deleted at once (no graceful termination without finalizers); Foreground
//!   propagation behaves like Background; Orphan drops owner references immediately;
//! - strategic merge patch knows only the well-known list keys, not every patch strategy;
//! - server-side apply without a schema (built-ins) uses well-known list keys; CRDs use
//!   `x-kubernetes-list-type`/`-map-keys` (lists without them are atomic, as on a real server);
//! - no admission, RBAC, defaulting of built-in kinds or multi-version conversion (versions
//!   of a CRD share storage and differ only in `apiVersion`, like conversion strategy None);
//! - injected faults apply to resource requests, not discovery or OpenAPI documents.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = countersign_testkit::apiserver::FakeApiServer::start().await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(server.client());
//! # Ok(()) }
//! ```

mod binding;
mod builtins;
mod cr_schema;
mod discovery;
mod error;
mod events;
mod faults;
mod gc;
mod http;
mod openapi;
mod patch;
mod selectors;
mod ssa;
mod store;
mod table;
mod verbs;
mod watch;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

pub use error::ApiError;
pub use faults::Faults;
pub use table::human_duration;

use store::{ResKey, State};
use write::{FieldValidation, Tracking, WriteCtx};

/// Default period of BOOKMARK events on watches that allow them.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// One answered request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Raw query string (still URL-encoded).
    pub query: String,
    pub content_type: String,
    pub status: u16,
    pub watch: bool,
}

/// State shared by the HTTP handlers and the handle.
pub(crate) struct Shared {
    state: Mutex<State>,
    faults: Faults,
    log: Mutex<Vec<RequestRecord>>,
    bookmark_ms: AtomicU64,
    addr: SocketAddr,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("state mutex poisoned")
    }

    fn record(&self, r: RequestRecord) {
        self.log.lock().expect("log mutex poisoned").push(r);
    }

    fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_ms.load(Ordering::Relaxed))
    }
}

struct Inner {
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.faults.drop_watches();
    }
}

/// The fake apiserver. Clones share one server; it stops serving when the last clone is
/// dropped or on [`FakeApiServer::shutdown`].
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("url", &self.url())
            .finish()
    }
}

impl FakeApiServer {
    /// Serves on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> anyhow::Result<FakeApiServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("Cannot bind {addr}"))?;
        let addr = listener
            .local_addr()
            .context("Cannot read the bound address")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            faults: Faults::default(),
            log: Mutex::new(Vec::new()),
            bookmark_ms: AtomicU64::new(DEFAULT_BOOKMARK_INTERVAL.as_millis() as u64),
            addr,
        });
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "fake apiserver stopped with an error");
            }
        });
        let server = FakeApiServer {
            inner: Arc::new(Inner { shared, stop }),
        };
        for ns in ["default", "kube-system"] {
            server.create_namespace(ns)?;
        }
        Ok(server)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared().addr)
    }

    /// A plain-HTTP client with default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let uri: ::http::Uri = self.url().parse().expect("the server URL is a valid URI");
        kube::Client::try_from(kube::Config::new(uri))
            .expect("a plain-HTTP kube client can always be built")
    }

    /// A kubeconfig pointing at this server (context `fake`, namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Stops serving: open watches end, new connections are refused.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        self.shared().faults.drop_watches();
    }

    pub fn faults(&self) -> &Faults {
        &self.shared().faults
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared()
            .log
            .lock()
            .expect("log mutex poisoned")
            .clone()
    }

    /// Forgets watch history: watches and continue tokens from older resourceVersions get 410.
    pub fn compact(&self) {
        self.shared().state().compact();
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (applies to new watches).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared()
            .bookmark_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().state().rv
    }

    fn ctx_for(&self, group: &str, version: &str, plural: &str) -> anyhow::Result<WriteCtx> {
        let def = self
            .shared()
            .state()
            .def(group, version, plural)
            .with_context(|| format!("{plural}.{group}/{version} is not served"))?;
        Ok(WriteCtx {
            def,
            version: version.to_string(),
            manager: "countersign-testkit".into(),
            validation: FieldValidation::Ignore,
            dry_run: false,
        })
    }

    /// Creates or replaces a CRD as `kubectl apply` would; its kinds are served right away and
    /// it reports Established and NamesAccepted.
    pub fn install_crd(&self, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
        let mut obj = serde_json::to_value(crd).context("Cannot serialise the CRD")?;
        obj["apiVersion"] = json!("apiextensions.k8s.io/v1");
        obj["kind"] = json!("CustomResourceDefinition");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ctx = self.ctx_for("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
        let mut st = self.shared().state();
        let res = ResKey::new("apiextensions.k8s.io", "customresourcedefinitions");
        match st.get(&res, "", &name).cloned() {
            None => write::create(&mut st, &ctx, None, obj, Tracking::Update).map(drop),
            Some(existing) => {
                obj["metadata"]["resourceVersion"] =
                    existing["metadata"]["resourceVersion"].clone();
                write::update(
                    &mut st,
                    &ctx,
                    "",
                    &name,
                    obj,
                    write::Sub::Main,
                    Tracking::Update,
                )
                .map(drop)
            }
        }
        .map_err(|e| anyhow::anyhow!("Cannot install CRD {name}: {e}"))
    }

    /// Creates a namespace (no error if it exists).
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        if self.get_raw("", "v1", "namespaces", "", name).is_some() {
            return Ok(());
        }
        self.create_raw("", "v1", "namespaces", json!({"metadata": {"name": name}}))
            .map(drop)
    }

    /// Creates an object as a client would (all server rules apply); returns the stored form.
    pub fn create_raw(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        obj: Value,
    ) -> anyhow::Result<Value> {
        let ctx = self.ctx_for(group, version, plural)?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let ns = ns.or_else(|| ctx.def.namespaced.then(|| "default".to_string()));
        let w = write::create(
            &mut self.shared().state(),
            &ctx,
            ns.as_deref(),
            obj,
            Tracking::Update,
        )
        .map_err(|e| anyhow::anyhow!("Cannot create {plural}: {e}"))?;
        Ok(ctx.def.to_wire(version, &w.obj))
    }

    /// An object in served form; `ns` is "" for cluster-scoped kinds.
    pub fn get_raw(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        let st = self.shared().state();
        let def = st.def(group, version, plural)?;
        st.get(&def.storage, if def.namespaced { ns } else { "" }, name)
            .map(|o| def.to_wire(version, o))
    }

    /// All objects of a resource (in `ns`, or every namespace when `None`), served form.
    pub fn list_raw(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Vec<Value> {
        let st = self.shared().state();
        let Some(def) = st.def(group, version, plural) else {
            return Vec::new();
        };
        st.list(&def.storage, ns)
            .into_iter()
            .map(|o| def.to_wire(version, o))
            .collect()
    }

    fn update_pod(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> anyhow::Result<()> {
        let mut st = self.shared().state();
        let res = ResKey::new("", "pods");
        let mut pod = st
            .get(&res, ns, name)
            .cloned()
            .with_context(|| format!("pod {ns}/{name} not found"))?;
        f(&mut pod);
        write::replace_internal(&mut st, &res, pod)
            .map_err(|e| anyhow::anyhow!("Cannot update pod {ns}/{name}: {e}"))?;
        Ok(())
    }

    /// Moves a pod to `phase` as a kubelet would (Running also marks containers ready).
    pub async fn set_pod_phase(&self, ns: &str, name: &str, phase: &str) -> anyhow::Result<()> {
        let now = write::now();
        self.update_pod(ns, name, |pod| {
            pod["status"]["phase"] = json!(phase);
            if phase == "Running" {
                pod["status"]["startTime"] = json!(now);
                let statuses: Vec<Value> = containers(pod)
                    .iter()
                    .map(|(n, image)| {
                        json!({"name": n, "image": image, "imageID": "", "ready": true, "started": true, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}})
                    })
                    .collect();
                pod["status"]["containerStatuses"] = json!(statuses);
                pod["status"]["conditions"] = json!([
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ]);
            }
        })
    }

    /// Terminates every container of a pod with `exit_code` and termination `message`; the
    /// pod becomes Succeeded (exit 0) or Failed.
    pub async fn terminate_pod(
        &self,
        ns: &str,
        name: &str,
        exit_code: i32,
        message: &str,
    ) -> anyhow::Result<()> {
        let now = write::now();
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        self.update_pod(ns, name, |pod| {
            let statuses: Vec<Value> = containers(pod)
                .iter()
                .map(|(n, image)| {
                    json!({"name": n, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 0,
                           "containerID": format!("fake://{n}"),
                           "state": {"terminated": {"exitCode": exit_code, "message": message, "reason": reason,
                                                    "startedAt": now, "finishedAt": now, "containerID": format!("fake://{n}")}}})
                })
                .collect();
            pod["status"]["containerStatuses"] = json!(statuses);
            pod["status"]["phase"] = json!(if exit_code == 0 { "Succeeded" } else { "Failed" });
            pod["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}]);
        })
    }
}

fn containers(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_string(),
                        c["image"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
