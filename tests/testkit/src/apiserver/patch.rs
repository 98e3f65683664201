//! Non-apply patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation
//! of strategic merge patch for built-in kinds (map-lists merged by their well-known keys,
//! `$patch`, `$setElementOrder`, `$deleteFromPrimitiveList` and `$retainKeys` directives).

use serde_json::Value;

use super::error::ApiError;
use super::ssa::{ListKind, Lists};

/// The patch content types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic patch to `doc`.
pub fn apply_patch(
    pt: PatchType,
    doc: &mut Value,
    body: &[u8],
    lists: Lists,
) -> Result<(), ApiError> {
    let parse = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    match pt {
        PatchType::Merge => {
            json_patch::merge(doc, &parse()?);
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(parse()?)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| ApiError::unprocessable_patch(e.to_string()))
        }
        PatchType::Strategic => {
            strategic_merge(doc, &parse()?, &mut Vec::new(), lists);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::bad_request(
            "apply patches are handled by server-side apply",
        )),
    }
}

fn strategic_merge(target: &mut Value, patch: &Value, fields: &mut Vec<String>, lists: Lists) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        v.as_object_mut().map(|m| m.remove("$patch"));
        *target = v;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    for (k, pv) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(arr), Some(del)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                arr.retain(|v| !del.contains(v));
            }
            continue;
        }
        let t = target.as_object_mut().expect("target made an object above");
        fields.push(k.clone());
        match (t.get_mut(k), pv) {
            (_, Value::Null) => {
                t.remove(k);
            }
            (Some(tv @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(tv, pv, fields, lists)
            }
            (Some(Value::Array(ta)), Value::Array(pa)) => match lists.kind(fields) {
                ListKind::Map(keys) => {
                    for pitem in pa {
                        let same = |i: &Value| keys.iter().all(|key| i.get(key) == pitem.get(key));
                        let delete = pitem.get("$patch").and_then(Value::as_str) == Some("delete");
                        if delete {
                            ta.retain(|i| !same(i));
                        } else if let Some(titem) = ta.iter_mut().find(|i| same(i)) {
                            strategic_merge(titem, pitem, fields, lists);
                        } else {
                            ta.push(pitem.clone());
                        }
                    }
                }
                ListKind::Set => {
                    for pitem in pa {
                        if !ta.contains(pitem) {
                            ta.push(pitem.clone());
                        }
                    }
                }
                ListKind::Atomic => *ta = pa.clone(),
            },
            _ => {
                let mut v = pv.clone();
                strip_directives(&mut v);
                t.insert(k.clone(), v);
            }
        }
        fields.pop();
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]}});
        apply_patch(
            PatchType::Strategic,
            &mut doc,
            patch.to_string().as_bytes(),
            Lists { schema: None },
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}]}})
        );
    }
}
