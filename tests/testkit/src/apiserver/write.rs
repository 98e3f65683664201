//! The write paths every verb funnels into: create, update (PUT, patches, apply, status) and
//! delete, with the apiserver's rules for identity fields, optimistic concurrency, status
//! subresources, generation, schema handling of custom resources, finalizers, owner-reference
//! cascade and namespace termination.

use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};

use super::cr_schema::run_schema;
use super::error::ApiError;
use super::gc::{Propagation, remove_object};
use super::ssa::{self, Lists, Manager};
use super::store::{EventType, ResKey, ResourceDef, State, name_of, ns_of};

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {o}"
            ))),
        }
    }
}

/// Which part of the object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    pub fn name(self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
        }
    }
}

/// How managedFields are maintained for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// A create/update/patch: changed fields go to the manager's Update entry.
    Update,
    /// Server-side apply already computed managedFields.
    Precomputed,
    /// Internal writes (garbage collection, test helpers) leave managedFields alone.
    None,
}

/// Everything about the request a write needs.
pub struct WriteCtx {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub manager: String,
    pub validation: FieldValidation,
    pub dry_run: bool,
}

impl WriteCtx {
    pub fn lists(&self) -> Lists<'_> {
        Lists {
            schema: self.def.schema(&self.version),
        }
    }
}

/// A successful write: the stored object, warnings for the `Warning` header, HTTP code.
pub struct Written {
    pub obj: Value,
    pub warnings: Vec<String>,
    pub code: u16,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::rng();
    (0..5)
        .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label)
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Kinds whose registry strategy maintains `metadata.generation` (configmaps, secrets, events,
/// leases, services, serviceaccounts and namespaces have none on a real server).
pub(crate) fn tracks_generation(def: &ResourceDef) -> bool {
    def.custom
        || matches!(
            def.plural.as_str(),
            "customresourcedefinitions" | "networkpolicies" | "pods"
        )
}

/// Everything except metadata and status: what `metadata.generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

fn is_crd(def: &ResourceDef) -> bool {
    def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
}

/// The status a freshly registered CRD reports.
fn crd_status(crd: &Value) -> Value {
    let t = now();
    let cond = |ty: &str, reason: &str, msg: &str| json!({"type": ty, "status": "True", "lastTransitionTime": t, "reason": reason, "message": msg});
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "storedVersions": storage,
    })
}

/// Server-set status of new objects of built-in kinds.
fn initial_status(def: &ResourceDef, obj: &Value) -> Option<Value> {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => Some(json!({"phase": "Pending", "qosClass": "BestEffort"})),
        ("", "namespaces") => Some(json!({"phase": "Active"})),
        ("", "services") => Some(json!({"loadBalancer": {}})),
        ("apiextensions.k8s.io", "customresourcedefinitions") => Some(crd_status(obj)),
        _ => None,
    }
}

pub fn create(
    st: &mut State,
    ctx: &WriteCtx,
    url_ns: Option<&str>,
    wire: Value,
    tracking: Tracking,
) -> Result<Written, ApiError> {
    let def = ctx.def.clone();
    if !wire.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    let mut obj = def.wire_to_stored(wire);
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from);
    let ns = if def.namespaced {
        let ns = url_ns.unwrap_or("");
        if body_ns.as_deref().is_some_and(|b| b != ns) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match st.get(&ResKey::new("", "namespaces"), "", ns) {
            None => return Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if is_deleting(n) => {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    super::error::qualified(&def.group, &def.plural),
                    name_of(&obj)
                )));
            }
            Some(_) => {}
        }
        meta_mut(&mut obj).insert("namespace".into(), json!(ns));
        ns.to_string()
    } else {
        meta_mut(&mut obj).remove("namespace");
        String::new()
    };
    let res = def.storage.clone();
    let mut name = name_of(&obj).to_string();
    if name.is_empty() {
        let prefix = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                "",
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        loop {
            name = format!("{prefix}{}", random_suffix());
            if st.get(&res, &ns, &name).is_none() {
                break;
            }
        }
        meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    if !valid_name(&name, def.plural == "namespaces") {
        return Err(ApiError::invalid(
            &def.group,
            &def.kind,
            &name,
            &[(
                "metadata.name".into(),
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )],
        ));
    }
    if st.get(&res, &ns, &name).is_some() {
        return Err(ApiError::already_exists(&def.group, &def.plural, &name));
    }
    if is_crd(&def) {
        super::store::crd_definition(&obj)?;
    }
    if def.status {
        obj.as_object_mut().map(|m| m.remove("status"));
        if let Some(s) = initial_status(&def, &obj) {
            obj["status"] = s;
        }
    }
    let meta = meta_mut(&mut obj);
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(k);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("generation");
    if tracks_generation(&def) {
        meta.insert("generation".into(), json!(1));
    }
    let warnings = if def.custom {
        run_schema(ctx, &mut obj, None)?
    } else {
        Vec::new()
    };
    let api_version = def.api_version(&ctx.version);
    match tracking {
        Tracking::Update => {
            let me = Manager {
                name: &ctx.manager,
                apply: false,
                subresource: None,
            };
            ssa::track_update(None, &mut obj, &me, &api_version, ctx.lists());
        }
        Tracking::Precomputed => {}
        Tracking::None => {
            meta_mut(&mut obj).remove("managedFields");
        }
    }
    let rv = if ctx.dry_run { st.rv + 1 } else { st.next_rv() };
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
    if !ctx.dry_run {
        if is_crd(&def) {
            st.register_crd(&obj)?;
        }
        st.commit(&res, EventType::Added, obj.clone(), None);
    }
    Ok(Written {
        obj,
        warnings,
        code: 201,
    })
}

pub fn update(
    st: &mut State,
    ctx: &WriteCtx,
    ns: &str,
    name: &str,
    wire: Value,
    sub: Sub,
    tracking: Tracking,
) -> Result<Written, ApiError> {
    let def = ctx.def.clone();
    let res = def.storage.clone();
    if !wire.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    let Some(existing) = st.get(&res, ns, name).cloned() else {
        if def.create_on_update && sub == Sub::Main {
            return create(st, ctx, Some(ns).filter(|_| def.namespaced), wire, tracking).map(
                |mut w| {
                    w.code = 201;
                    w
                },
            );
        }
        return Err(ApiError::not_found(&def.group, &def.plural, name));
    };
    let new = def.wire_to_stored(wire);
    let body_name = name_of(&new);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if def.namespaced && !ns_of(&new).is_empty() && ns_of(&new) != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let stored_rv = existing
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if let Some(rv) = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && Some(rv) != stored_rv
    {
        return Err(ApiError::conflict(&def.group, &def.plural, name));
    }
    let mut result = match sub {
        Sub::Status => {
            let mut r = existing.clone();
            match new.get("status") {
                Some(s) => r["status"] = s.clone(),
                None => {
                    r.as_object_mut().map(|m| m.remove("status"));
                }
            }
            if tracking == Tracking::Precomputed {
                r["metadata"]["managedFields"] = new
                    .pointer("/metadata/managedFields")
                    .cloned()
                    .unwrap_or(json!([]));
            }
            r
        }
        Sub::Main => {
            let mut r = new;
            if def.status {
                match existing.get("status") {
                    Some(s) => r["status"] = s.clone(),
                    None => {
                        r.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            r
        }
    };
    {
        let old_meta = existing["metadata"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let meta = meta_mut(&mut result);
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            match old_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        if tracking == Tracking::None
            || (tracking == Tracking::Update && !meta.contains_key("managedFields"))
        {
            match old_meta.get("managedFields") {
                Some(v) => meta.insert("managedFields".into(), v.clone()),
                None => meta.remove("managedFields"),
            };
        }
    }
    result["apiVersion"] = existing["apiVersion"].clone();
    result["kind"] = existing["kind"].clone();
    if is_deleting(&existing) {
        let old_f = finalizers(&existing);
        let added: Vec<String> = finalizers(&result)
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            let list: Vec<String> = added.iter().map(|f| format!("\"{f}\"")).collect();
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                name,
                &[(
                    "metadata.finalizers".into(),
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        list.join(", ")
                    ),
                )],
            ));
        }
    }
    let warnings = if def.custom {
        run_schema(ctx, &mut result, Some(&existing))?
    } else {
        Vec::new()
    };
    if is_crd(&def) {
        super::store::crd_definition(&result)?;
    }
    if tracks_generation(&def) && spec_part(&result) != spec_part(&existing) {
        let g = existing
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        result["metadata"]["generation"] = json!(g + 1);
    }
    if tracking == Tracking::Update {
        let me = Manager {
            name: &ctx.manager,
            apply: false,
            subresource: sub.name(),
        };
        ssa::track_update(
            Some(&existing),
            &mut result,
            &me,
            &def.api_version(&ctx.version),
            ctx.lists(),
        );
    }
    if result == existing {
        // A no-op write changes nothing, not even the resourceVersion, and emits no event.
        return Ok(Written {
            obj: existing,
            warnings,
            code: 200,
        });
    }
    let rv = if ctx.dry_run { st.rv + 1 } else { st.next_rv() };
    result["metadata"]["resourceVersion"] = json!(rv.to_string());
    if ctx.dry_run {
        return Ok(Written {
            obj: result,
            warnings,
            code: 200,
        });
    }
    if is_crd(&def) {
        st.register_crd(&result)?;
    }
    st.commit(&res, EventType::Modified, result.clone(), Some(existing));
    if is_deleting(&result) && finalizers(&result).is_empty() {
        let gone = remove_object(st, &res, ns, name, Propagation::Background);
        return Ok(Written {
            obj: gone.unwrap_or(result),
            warnings,
            code: 200,
        });
    }
    Ok(Written {
        obj: result,
        warnings,
        code: 200,
    })
}

/// Internal update used by test helpers: replaces the stored object as is (new rv, MODIFIED).
pub fn replace_internal(st: &mut State, res: &ResKey, mut obj: Value) -> Result<Value, ApiError> {
    let (ns, name) = (ns_of(&obj).to_string(), name_of(&obj).to_string());
    let Some(existing) = st.get(res, &ns, &name).cloned() else {
        return Err(ApiError::not_found(&res.group, &res.plural, &name));
    };
    if obj == existing {
        return Ok(existing);
    }
    let rv = st.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.commit(res, EventType::Modified, obj.clone(), Some(existing));
    Ok(obj)
}
