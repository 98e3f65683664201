//! Events are stored once, as core/v1 Events, and also served as events.k8s.io/v1 with the
//! apiserver's field mapping, so an event kube's `Recorder` writes through events.k8s.io shows
//! up in `kubectl describe` (which lists core/v1 events by `involvedObject.*`).

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field)
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(obj: &Value, from_core: bool) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            let renamed = RENAMES.iter().find_map(|(core, v1)| {
                if from_core && k == core {
                    Some(*v1)
                } else if !from_core && k == v1 {
                    Some(*core)
                } else {
                    None
                }
            });
            out.insert(renamed.unwrap_or(k).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

pub fn core_to_v1(core: &Value) -> Value {
    let mut v = rename(core, true);
    if v.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
        v.as_object_mut().map(|m| m.remove("deprecatedCount"));
    }
    v
}

pub fn v1_to_core(v1: &Value) -> Value {
    let mut core = rename(v1, false);
    core["apiVersion"] = Value::String("v1".into());
    core
}
