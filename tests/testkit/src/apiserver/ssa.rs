//! Server-side apply and `metadata.managedFields`: field sets in the `FieldsV1` shape, list
//! semantics (`x-kubernetes-list-type` from a CRD schema, well-known keys for built-ins),
//! conflict detection between managers, and removal of fields a manager stopped applying.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Answers "what kind of list lives at this field path" for one resource version.
#[derive(Debug, Clone, Copy)]
pub struct Lists<'a> {
    /// The CRD version's `openAPIV3Schema`; `None` for built-in kinds.
    pub schema: Option<&'a Value>,
}

fn well_known(fields: &[String]) -> ListKind {
    let last = fields.last().map(String::as_str).unwrap_or("");
    let under_containers = fields.iter().any(|f| f.ends_with("ontainers"));
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListKind::Map(vec!["name".into()]),
        "volumeMounts" => ListKind::Map(vec!["mountPath".into()]),
        "ports" if under_containers => ListKind::Map(vec!["containerPort".into()]),
        "ports" => ListKind::Map(vec!["port".into()]),
        "conditions" => ListKind::Map(vec!["type".into()]),
        "ownerReferences" => ListKind::Map(vec!["uid".into()]),
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

impl Lists<'_> {
    /// `fields` are the field names from the object root, list positions left out.
    pub fn kind(&self, fields: &[String]) -> ListKind {
        let Some(schema) = self.schema else {
            return well_known(fields);
        };
        if fields.first().map(String::as_str) == Some("metadata") {
            return well_known(fields);
        }
        let mut node = schema;
        for f in fields {
            if node.get("type").and_then(Value::as_str) == Some("array") {
                match node.get("items") {
                    Some(items) => node = items,
                    None => return ListKind::Atomic,
                }
            }
            match node.pointer(&format!(
                "/properties/{}",
                f.replace('~', "~0").replace('/', "~1")
            )) {
                Some(n) => node = n,
                None => match node.get("additionalProperties").filter(|a| a.is_object()) {
                    Some(n) => node = n,
                    None => return ListKind::Atomic,
                },
            }
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => ListKind::Map(
                node.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some("set") => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }
}

/// A path in FieldsV1 element notation: `f:spec`, `k:{"type":"Ready"}`, `v:"x"`.
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

fn is_marker(p: &FieldPath) -> bool {
    p.last()
        .is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"))
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    let mut sorted = keys.to_vec();
    sorted.sort();
    for k in sorted {
        if let Some(v) = item.get(&k) {
            m.insert(k, v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

fn collect(
    v: &Value,
    path: &mut FieldPath,
    fields: &mut Vec<String>,
    lists: Lists,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                fields.push(k.clone());
                collect(child, path, fields, lists, out);
                fields.pop();
                path.pop();
            }
        }
        Value::Array(items) => match lists.kind(fields) {
            ListKind::Map(keys) => {
                for item in items {
                    path.push(item_key(item, &keys));
                    out.insert(path.clone());
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            fields.push(k.clone());
                            collect(child, path, fields, lists, out);
                            fields.pop();
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The part of an object managers can own: everything but apiVersion, kind and
/// server-owned metadata.
pub fn ownable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
            if meta.is_empty() {
                m.remove("metadata");
            }
        }
    }
    o
}

pub fn leaves(obj: &Value, lists: Lists) -> FieldSet {
    let mut out = FieldSet::new();
    collect(
        &ownable(obj),
        &mut Vec::new(),
        &mut Vec::new(),
        lists,
        &mut out,
    );
    out
}

/// Resolves a field path in an object.
pub fn lookup<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn matches_elem(item: &Value, el: &str) -> bool {
    if let Some(k) = el.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        keys.iter().all(|(k, v)| item.get(k) == Some(v))
    } else if let Some(v) = el.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| *item == v)
    } else {
        false
    }
}

fn step<'v>(cur: &'v Value, el: &str) -> Option<&'v Value> {
    match el.strip_prefix("f:") {
        Some(f) => cur.get(f),
        None => cur.as_array()?.iter().find(|i| matches_elem(i, el)),
    }
}

fn step_mut<'v>(cur: &'v mut Value, el: &str) -> Option<&'v mut Value> {
    match el.strip_prefix("f:") {
        Some(f) => cur.get_mut(f),
        None => cur.as_array_mut()?.iter_mut().find(|i| matches_elem(i, el)),
    }
}

/// Removes the field or list entry at `path`, if present.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent {
        match step_mut(cur, el) {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last.strip_prefix("f:") {
        Some(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        None => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !matches_elem(i, last));
            }
        }
    }
}

/// FieldSet → `fieldsV1` JSON.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut node = &mut root;
        for el in p {
            node = node
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("field set nodes are objects");
        }
        if p.last().is_some_and(|e| e.starts_with("k:")) {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// `fieldsV1` JSON → FieldSet.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if !path.is_empty() && (m.is_empty() || m.contains_key(".")) {
            out.insert(path.clone());
        }
        for (k, child) in m {
            if k != "." {
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Renders a path like the apiserver's conflict messages: `.status.conditions[type="Ready"].status`.
pub fn render_path(p: &[String]) -> String {
    let mut s = String::new();
    for el in p {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Merges an apply configuration into the live object: maps recursively, map-lists by key,
/// sets by union, everything else replaced. `null` removes.
pub fn merge_apply(target: &mut Value, config: &Value, fields: &mut Vec<String>, lists: Lists) {
    let (Some(t), Some(c)) = (target.as_object_mut(), config.as_object()) else {
        *target = config.clone();
        return;
    };
    for (k, cv) in c {
        fields.push(k.clone());
        match (t.get_mut(k), cv) {
            (_, Value::Null) => {
                t.remove(k);
            }
            (Some(tv @ Value::Object(_)), Value::Object(_)) => merge_apply(tv, cv, fields, lists),
            (Some(Value::Array(ta)), Value::Array(ca)) => match lists.kind(fields) {
                ListKind::Map(keys) => {
                    for citem in ca {
                        let key = item_key(citem, &keys);
                        match ta.iter_mut().find(|i| matches_elem(i, &key)) {
                            Some(titem) => merge_apply(titem, citem, fields, lists),
                            None => ta.push(citem.clone()),
                        }
                    }
                }
                ListKind::Set => {
                    for citem in ca {
                        if !ta.contains(citem) {
                            ta.push(citem.clone());
                        }
                    }
                }
                ListKind::Atomic => *ta = ca.clone(),
            },
            _ => {
                t.insert(k.clone(), cv.clone());
            }
        }
        fields.pop();
    }
}

/// Identity of a managedFields entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager<'a> {
    pub name: &'a str,
    pub apply: bool,
    pub subresource: Option<&'a str>,
}

fn entry_is(e: &Value, m: &Manager) -> bool {
    e.get("manager").and_then(Value::as_str) == Some(m.name)
        && (e.get("operation").and_then(Value::as_str) == Some("Apply")) == m.apply
        && e.get("subresource").and_then(Value::as_str) == m.subresource
}

fn entries(obj: Option<&Value>) -> Vec<Value> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn entry_set(e: &Value) -> FieldSet {
    e.get("fieldsV1").map(from_fields_v1).unwrap_or_default()
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes back the entries, replacing `me`'s set (and time when it changed), dropping empties.
fn store_entries(
    obj: &mut Value,
    mut all: Vec<(Value, FieldSet)>,
    me: &Manager,
    my_set: FieldSet,
    api_version: &str,
) {
    match all.iter_mut().find(|(e, _)| entry_is(e, me)) {
        Some((e, set)) => {
            if *set != my_set {
                e["time"] = json!(now());
            }
            e["apiVersion"] = json!(api_version);
            *set = my_set;
        }
        None => {
            let mut e = json!({
                "manager": me.name,
                "operation": if me.apply { "Apply" } else { "Update" },
                "apiVersion": api_version,
                "time": now(),
                "fieldsType": "FieldsV1",
            });
            if let Some(s) = me.subresource {
                e["subresource"] = json!(s);
            }
            all.push((e, my_set));
        }
    }
    let out: Vec<Value> = all
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(mut e, s)| {
            e["fieldsV1"] = to_fields_v1(&s);
            e
        })
        .collect();
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["managedFields"] = Value::Array(out);
}

/// A conflict: the other manager and the field both want.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// Server-side apply of `config` by `me` onto `live` (absent: create). Returns the merged
/// object with updated managedFields, or the conflicts when not forced.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    me: &Manager,
    force: bool,
    api_version: &str,
    lists: Lists,
) -> Result<Value, Vec<Conflict>> {
    let mut all: Vec<(Value, FieldSet)> = entries(live)
        .into_iter()
        .map(|e| {
            let s = entry_set(&e);
            (e, s)
        })
        .collect();
    let old_set = all
        .iter()
        .find(|(e, _)| entry_is(e, me))
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let new_set = leaves(config, lists);
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    for (e, set) in all.iter_mut() {
        if entry_is(e, me) {
            continue;
        }
        let clashing: Vec<FieldPath> = new_set
            .iter()
            .filter(|p| !is_marker(p) && set.contains(*p) && lookup(live_v, p) != lookup(config, p))
            .cloned()
            .collect();
        for p in clashing {
            if force {
                set.remove(&p);
            } else {
                conflicts.push(Conflict {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    path: render_path(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut merged = live.cloned().unwrap_or_else(|| json!({}));
    let mut cfg = config.clone();
    if let Some(m) = cfg.as_object_mut() {
        // Identity fields are applied by the caller; managedFields in a config are ignored.
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    merge_apply(&mut merged, &cfg, &mut Vec::new(), lists);
    let mut dropped: Vec<&FieldPath> = old_set.difference(&new_set).collect();
    // Whole list entries go first: removing a key field first would make the entry unfindable.
    dropped.sort_by_key(|p| p.len());
    for p in dropped {
        let owned_elsewhere = all
            .iter()
            .filter(|(e, _)| !entry_is(e, me))
            .any(|(_, s)| s.iter().any(|q| q.starts_with(p)));
        if !owned_elsewhere {
            remove(&mut merged, p);
            prune_empty_parents(&mut merged, p, config, &all, me);
        }
    }
    store_entries(&mut merged, all, me, new_set, api_version);
    Ok(merged)
}

/// After removing `path`, removes the maps above it that became empty and that the applier
/// no longer sets and nobody else owns below: the applier owned them too (`.` in its
/// managedFields), so the apiserver drops them with their last field instead of leaving
/// `{}` behind (which would fail required-field validation).
fn prune_empty_parents(
    merged: &mut Value,
    path: &[String],
    config: &Value,
    all: &[(Value, FieldSet)],
    me: &Manager,
) {
    let mut parent = &path[..path.len().saturating_sub(1)];
    while !parent.is_empty() && parent.last().is_some_and(|el| el.starts_with("f:")) {
        let empty = lookup(merged, parent)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        let applied = lookup(config, parent).is_some();
        let owned_elsewhere = all
            .iter()
            .filter(|(e, _)| !entry_is(e, me))
            .any(|(_, s)| s.iter().any(|q| q.starts_with(parent)));
        if !empty || applied || owned_elsewhere {
            return;
        }
        remove(merged, parent);
        parent = &parent[..parent.len() - 1];
    }
}

/// Records a non-apply write (create, update, patch) by `me`: fields it changed move to its
/// Update entry; fields that no longer exist leave every entry.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    me: &Manager,
    api_version: &str,
    lists: Lists,
) {
    let new_leaves = leaves(new, lists);
    let old_leaves = old.map(|o| leaves(o, lists)).unwrap_or_default();
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| {
            if is_marker(p) {
                !old_leaves.contains(*p)
            } else {
                lookup(old_v, p) != lookup(new, p)
            }
        })
        .cloned()
        .collect();
    let mut all: Vec<(Value, FieldSet)> = entries(old)
        .into_iter()
        .map(|e| {
            let s = entry_set(&e);
            (e, s)
        })
        .collect();
    let mut mine = FieldSet::new();
    for (e, set) in all.iter_mut() {
        set.retain(|p| new_leaves.contains(p) || new_leaves.iter().any(|q| q.starts_with(p)));
        if entry_is(e, me) {
            mine = set.clone();
        } else {
            set.retain(|p| !changed.contains(p));
        }
    }
    if changed.is_empty() && !all.iter().any(|(e, _)| entry_is(e, me)) {
        // Nothing changed by this manager: keep the entries as they were.
        let out: Vec<Value> = all
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(mut e, s)| {
                e["fieldsV1"] = to_fields_v1(&s);
                e
            })
            .collect();
        if new.get("metadata").is_some() {
            new["metadata"]["managedFields"] = Value::Array(out);
        }
        return;
    }
    mine.extend(changed);
    store_entries(new, all, me, mine, api_version);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_roundtrip() {
        let obj = json!({"spec": {"a": 1, "b": {"c": [1, 2]}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let lists = Lists { schema: None };
        let set = leaves(&obj, lists);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        assert!(set.contains(&vec![
            "f:status".to_string(),
            "f:conditions".to_string(),
            "k:{\"type\":\"Ready\"}".to_string()
        ]));
    }

    #[test]
    fn reapply_without_field_removes_it() {
        let lists = Lists { schema: None };
        let me = Manager {
            name: "m",
            apply: true,
            subresource: None,
        };
        let a = apply(
            None,
            &json!({"spec": {"x": 1, "y": 2}}),
            &me,
            false,
            "v1",
            lists,
        )
        .unwrap();
        let b = apply(
            Some(&a),
            &json!({"spec": {"x": 1}}),
            &me,
            false,
            "v1",
            lists,
        )
        .unwrap();
        assert_eq!(b["spec"], json!({"x": 1}));
        // A whole nested object left out goes away with its fields, not as `{}`.
        let c = apply(
            Some(&b),
            &json!({"spec": {"x": 1, "held": {"login": "a", "id": 1}}}),
            &me,
            false,
            "v1",
            lists,
        )
        .unwrap();
        let d = apply(
            Some(&c),
            &json!({"spec": {"x": 1}}),
            &me,
            false,
            "v1",
            lists,
        )
        .unwrap();
        assert_eq!(d["spec"], json!({"x": 1}));
        let other = Manager {
            name: "o",
            apply: true,
            subresource: None,
        };
        let err = apply(
            Some(&b),
            &json!({"spec": {"x": 2}}),
            &other,
            false,
            "v1",
            lists,
        )
        .unwrap_err();
        assert_eq!(err[0].path, ".spec.x");
    }
}
