//! The object store: resource definitions (built-in and from CRDs), objects as JSON keyed by
//! (group, plural) then (namespace, name), one global resourceVersion counter and the watch
//! history every watch replays from. Everything here runs under the server's single mutex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::events;

/// Storage identity of a resource: group and plural, independent of version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

impl ResKey {
    pub fn new(group: &str, plural: &str) -> Self {
        ResKey {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// How the served form differs from the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    None,
    /// events.k8s.io/v1 Events, stored as core/v1 Events.
    EventsV1,
}

/// One served resource and what the server knows about it.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource: main writes ignore `.status`, status writes only change it.
    pub status: bool,
    /// Custom resource: schema handling applies and strategic merge patch is refused.
    pub custom: bool,
    /// `openAPIV3Schema` per version (custom resources only).
    pub schemas: BTreeMap<String, Value>,
    /// `additionalPrinterColumns` per version (custom resources only).
    pub columns: BTreeMap<String, Vec<Value>>,
    /// `selectableFields` per version (custom resources only), as dotted paths.
    pub selectable: BTreeMap<String, Vec<String>>,
    pub storage: ResKey,
    pub conversion: Conversion,
    /// PUT of an absent object creates it (leases do, most kinds do not).
    pub create_on_update: bool,
}

impl ResourceDef {
    pub fn key(&self) -> ResKey {
        ResKey::new(&self.group, &self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas.get(version)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Stored form → served form for `version`.
    pub fn to_wire(&self, version: &str, stored: &Value) -> Value {
        let mut v = match self.conversion {
            Conversion::None => stored.clone(),
            Conversion::EventsV1 => events::core_to_v1(stored),
        };
        v["apiVersion"] = json!(self.api_version(version));
        v["kind"] = json!(self.kind);
        v
    }

    /// Served form → stored form.
    pub fn wire_to_stored(&self, wire: Value) -> Value {
        match self.conversion {
            Conversion::None => wire,
            Conversion::EventsV1 => events::v1_to_core(&wire),
        }
    }
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change in the history: the stored object after the change (for DELETED, the final
/// state) and before it, so selector-filtered watches can turn "left the selector" into DELETED.
#[derive(Debug)]
pub struct WatchRecord {
    pub rv: u64,
    pub res: ResKey,
    pub ns: String,
    pub kind: EventType,
    pub obj: Value,
    pub old: Option<Value>,
}

/// (namespace or "" for cluster-scoped, name)
pub type ObjKey = (String, String);

/// Oldest history kept before the oldest records are compacted away.
const HISTORY_LIMIT: usize = 100_000;

pub struct State {
    pub defs: BTreeMap<ResKey, Arc<ResourceDef>>,
    pub objects: BTreeMap<ResKey, BTreeMap<ObjKey, Value>>,
    pub rv: u64,
    pub history: VecDeque<Arc<WatchRecord>>,
    /// Every change with rv > horizon is still in `history`.
    pub horizon: u64,
    pub tx: broadcast::Sender<Arc<WatchRecord>>,
}

impl State {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut s = State {
            defs: BTreeMap::new(),
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            horizon: 1,
            tx,
        };
        for def in super::builtins::definitions() {
            s.defs.insert(def.key(), Arc::new(def));
        }
        s
    }

    /// Looks up a served (group, version, plural).
    pub fn def(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .get(&ResKey::new(group, plural))
            .filter(|d| d.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn get(&self, res: &ResKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
    }

    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores (or removes, for Deleted) `obj` and records the change for watchers.
    pub fn commit(&mut self, res: &ResKey, kind: EventType, obj: Value, old: Option<Value>) {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        let bucket = self.objects.entry(res.clone()).or_default();
        if kind == EventType::Deleted {
            bucket.remove(&(ns.clone(), name));
        } else {
            bucket.insert((ns.clone(), name), obj.clone());
        }
        let rec = Arc::new(WatchRecord {
            rv,
            res: res.clone(),
            ns,
            kind,
            obj,
            old,
        });
        self.history.push_back(rec.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(r) = self.history.pop_front() {
                self.horizon = r.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(rec);
    }

    /// Forgets all history: watches and continues from older resourceVersions get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.horizon = self.rv;
    }

    /// The objects of `res` (in `ns`, or all) as they were at resourceVersion `at`, rebuilt by
    /// undoing newer history. `None` if that history was compacted.
    pub fn snapshot(
        &self,
        res: &ResKey,
        ns: Option<&str>,
        at: u64,
    ) -> Option<BTreeMap<ObjKey, Value>> {
        if at < self.horizon {
            return None;
        }
        let mut objs = self.objects.get(res).cloned().unwrap_or_default();
        for rec in self.history.iter().rev().take_while(|r| r.rv > at) {
            if rec.res != *res {
                continue;
            }
            let key = (rec.ns.clone(), name_of(&rec.obj).to_string());
            match (rec.kind, &rec.old) {
                (EventType::Added, _) => {
                    objs.remove(&key);
                }
                (_, Some(old)) => {
                    objs.insert(key, old.clone());
                }
                (_, None) => {}
            }
        }
        if let Some(ns) = ns {
            objs.retain(|(n, _), _| n == ns);
        }
        Some(objs)
    }

    /// Current objects of `res`, optionally in one namespace, in key order.
    pub fn list(&self, res: &ResKey, ns: Option<&str>) -> Vec<&Value> {
        match self.objects.get(res) {
            None => Vec::new(),
            Some(b) => b
                .iter()
                .filter(|((n, _), _)| ns.is_none_or(|ns| n == ns))
                .map(|(_, v)| v)
                .collect(),
        }
    }

    /// Registers (or re-registers) the kinds a CRD object defines.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), ApiError> {
        let def = crd_definition(crd)?;
        self.defs.insert(def.key(), Arc::new(def));
        Ok(())
    }
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn ns_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the served definition from a `CustomResourceDefinition` object.
pub fn crd_definition(crd: &Value) -> Result<ResourceDef, ApiError> {
    let spec = crd
        .get("spec")
        .ok_or_else(|| ApiError::bad_request("CustomResourceDefinition without spec"))?;
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let name = name_of(crd);
    let mut causes = Vec::new();
    if plural.is_empty() {
        causes.push((
            "spec.names.plural".to_string(),
            "Required value".to_string(),
        ));
    }
    if kind.is_empty() {
        causes.push(("spec.names.kind".to_string(), "Required value".to_string()));
    }
    if group.is_empty() {
        causes.push(("spec.group".to_string(), "Required value".to_string()));
    }
    if name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".to_string(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push((
            "spec.versions".to_string(),
            "Invalid value: must have exactly one version marked as storage version".to_string(),
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            &causes,
        ));
    }
    let mut served: Vec<String> = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut columns = BTreeMap::new();
    let mut selectable = BTreeMap::new();
    let mut status = false;
    for v in &versions {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            served.insert(0, vname.clone());
        } else {
            served.push(vname.clone());
        }
        if let Some(sc) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(vname.clone(), sc.clone());
        }
        let cols = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        columns.insert(vname.clone(), cols);
        let fields: Vec<String> = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        selectable.insert(vname.clone(), fields);
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
    }
    Ok(ResourceDef {
        group: group.clone(),
        versions: served,
        plural: plural.clone(),
        singular: {
            let sg = s("/names/singular");
            if sg.is_empty() {
                kind.to_lowercase()
            } else {
                sg
            }
        },
        kind,
        namespaced: s("/scope") != "Cluster",
        short_names: str_list(spec.pointer("/names/shortNames")),
        categories: str_list(spec.pointer("/names/categories")),
        status,
        custom: true,
        schemas,
        columns,
        selectable,
        storage: ResKey::new(&group, &plural),
        conversion: Conversion::None,
        create_on_update: false,
    })
}
