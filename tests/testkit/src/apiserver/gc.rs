//! Deletion as the registry and the garbage collector do it: preconditions, finalizers and
//! deletionTimestamp, final removal with its DELETED event, owner-reference cascade
//! (background; Orphan drops the references; Foreground is treated as background), namespace
//! termination and removal of a CRD's objects with the CRD.

use serde_json::{Value, json};

use super::error::ApiError;
use super::store::{EventType, ResKey, ResourceDef, State};
use super::write::{Written, finalizers, is_deleting, now};

/// `propagationPolicy`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

pub struct DeleteOpts {
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

pub fn delete(
    st: &mut State,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Written, ApiError> {
    let res = def.storage.clone();
    let Some(existing) = st.get(&res, ns, name).cloned() else {
        return Err(ApiError::not_found(&def.group, &def.plural, name));
    };
    let meta_s = |k: &str| {
        existing
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some(uid) = &opts.uid
        && *uid != meta_s("uid")
    {
        let msg = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_s("uid")
        );
        return Err(ApiError::precondition(&def.group, &def.plural, name, msg));
    }
    if let Some(rv) = &opts.resource_version
        && *rv != meta_s("resourceVersion")
    {
        let msg = format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta_s("resourceVersion")
        );
        return Err(ApiError::precondition(&def.group, &def.plural, name, msg));
    }
    if opts.dry_run {
        return Ok(Written {
            obj: existing,
            warnings: Vec::new(),
            code: 200,
        });
    }
    let obj = delete_internal(st, &res, ns, name, opts.propagation);
    match obj {
        Some(o) if st.get(&res, ns, name).is_some() => Ok(Written {
            obj: o,
            warnings: Vec::new(),
            code: 202,
        }),
        Some(o) => Ok(Written {
            obj: o,
            warnings: Vec::new(),
            code: 200,
        }),
        None => Err(ApiError::not_found(&def.group, &def.plural, name)),
    }
}

/// Deletes as the registry does after admission: marks objects with finalizers (and namespaces
/// with content) as deleting, removes the rest. Returns the object's last state.
pub fn delete_internal(
    st: &mut State,
    res: &ResKey,
    ns: &str,
    name: &str,
    prop: Propagation,
) -> Option<Value> {
    let existing = st.get(res, ns, name)?.clone();
    let is_ns = res.group.is_empty() && res.plural == "namespaces";
    if prop == Propagation::Orphan {
        orphan_dependents(st, &existing);
    }
    if !finalizers(&existing).is_empty() || is_ns {
        if is_deleting(&existing) {
            return Some(existing);
        }
        let mut marked = existing.clone();
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(g) = existing
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
        {
            marked["metadata"]["generation"] = json!(g + 1);
        }
        if is_ns {
            marked["status"]["phase"] = json!("Terminating");
        }
        let rv = st.next_rv();
        marked["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.commit(res, EventType::Modified, marked.clone(), Some(existing));
        if is_ns {
            terminate_namespace(st, name);
            return Some(st.get(res, ns, name).cloned().unwrap_or(marked));
        }
        return Some(marked);
    }
    remove_object(st, res, ns, name, prop)
}

/// Final removal: DELETED event, then garbage collection of dependents.
pub(crate) fn remove_object(
    st: &mut State,
    res: &ResKey,
    ns: &str,
    name: &str,
    prop: Propagation,
) -> Option<Value> {
    let existing = st.get(res, ns, name)?.clone();
    let mut gone = existing.clone();
    let rv = st.next_rv();
    gone["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.commit(res, EventType::Deleted, gone.clone(), Some(existing));
    if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
        let key = ResKey::new(
            gone.pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or(""),
            gone.pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let keys: Vec<(String, String)> = st
            .objects
            .get(&key)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default();
        for (n, o) in keys {
            remove_object(st, &key, &n, &o, Propagation::Background);
        }
        st.defs.remove(&key);
    }
    if prop != Propagation::Orphan {
        collect_garbage(st, &gone);
    }
    if !ns.is_empty() {
        finish_namespace(st, ns);
    }
    Some(gone)
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn uid_exists(st: &State, uid: &str) -> bool {
    st.objects
        .values()
        .flat_map(|b| b.values())
        .any(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
}

/// Objects (resource, namespace, name) that name `uid` among their owners.
fn dependents(st: &State, uid: &str) -> Vec<(ResKey, String, String)> {
    let mut out = Vec::new();
    for (res, bucket) in &st.objects {
        for ((ns, name), o) in bucket {
            if owner_uids(o).iter().any(|u| u == uid) {
                out.push((res.clone(), ns.clone(), name.clone()));
            }
        }
    }
    out
}

fn drop_owner_ref(st: &mut State, res: &ResKey, ns: &str, name: &str, uid: &str) {
    let Some(existing) = st.get(res, ns, name).cloned() else {
        return;
    };
    let mut o = existing.clone();
    if let Some(refs) = o
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty() {
            o["metadata"]
                .as_object_mut()
                .map(|m| m.remove("ownerReferences"));
        }
    }
    let rv = st.next_rv();
    o["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.commit(res, EventType::Modified, o, Some(existing));
}

fn orphan_dependents(st: &mut State, owner: &Value) {
    let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str) else {
        return;
    };
    for (res, ns, name) in dependents(st, uid) {
        drop_owner_ref(st, &res, &ns, &name, uid);
    }
}

/// Background garbage collection: dependents whose owners are all gone are deleted; dangling
/// references of dependents that still have a live owner are removed.
fn collect_garbage(st: &mut State, owner: &Value) {
    let Some(uid) = owner
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return;
    };
    for (res, ns, name) in dependents(st, &uid) {
        let Some(dep) = st.get(&res, &ns, &name) else {
            continue;
        };
        let other_live = owner_uids(dep)
            .iter()
            .any(|u| *u != uid && uid_exists(st, u));
        if other_live {
            drop_owner_ref(st, &res, &ns, &name, &uid);
        } else {
            delete_internal(st, &res, &ns, &name, Propagation::Background);
        }
    }
}

fn terminate_namespace(st: &mut State, ns: &str) {
    let targets: Vec<(ResKey, String)> = st
        .objects
        .iter()
        .filter(|(res, _)| st.defs.get(*res).is_some_and(|d| d.namespaced))
        .flat_map(|(res, b)| {
            b.keys()
                .filter(|(n, _)| n == ns)
                .map(move |(_, name)| (res.clone(), name.clone()))
        })
        .collect();
    for (res, name) in targets {
        delete_internal(st, &res, ns, &name, Propagation::Background);
    }
    finish_namespace(st, ns);
}

/// Removes a terminating namespace once nothing is left in it.
fn finish_namespace(st: &mut State, ns: &str) {
    let ns_key = ResKey::new("", "namespaces");
    let Some(n) = st.get(&ns_key, "", ns) else {
        return;
    };
    if !is_deleting(n) {
        return;
    }
    let empty = st
        .objects
        .iter()
        .all(|(res, b)| res.plural == "namespaces" || !b.keys().any(|(n, _)| n == ns));
    if empty {
        remove_object(st, &ns_key, "", ns, Propagation::Background);
    }
}
