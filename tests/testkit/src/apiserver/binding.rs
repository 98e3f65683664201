//! `POST /api/v1/namespaces/{ns}/pods/{name}/binding`: assigning a pod to a node, as the
//! scheduler does. Mirrors the real registry (`BindingREST`): the Binding's name must be the
//! pod's, its target a `Node` with a name; a pod already assigned, or being deleted, is a
//! `409 Conflict`; success sets `spec.nodeName`, adds the `PodScheduled` condition and
//! answers `201` with a `Status` of `Success`.

use axum::response::Response;
use http::Method;
use serde_json::{Value, json};

use super::Shared;
use super::error::ApiError;
use super::http::{Req, ResourcePath, json_response};
use super::store::ResKey;
use super::write;

/// Binds pod `rp.ns/rp.name` to the node the request body names.
pub fn bind(shared: &Shared, rp: &ResourcePath, req: &Req) -> Result<Response, ApiError> {
    if req.method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let (Some(ns), Some(name)) = (rp.ns.as_deref(), rp.name.as_deref()) else {
        return Err(ApiError::path_not_found());
    };
    let binding: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("cannot decode the Binding: {e}")))?;
    let bound_name = binding.pointer("/metadata/name").and_then(Value::as_str);
    if bound_name.is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    let kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    if !kind.is_empty() && kind != "Node" {
        causes.push((
            "target.kind".to_string(),
            "must be empty or 'Node'".to_string(),
        ));
    }
    if node.is_empty() {
        causes.push(("target.name".to_string(), "Required value".to_string()));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", name, &causes));
    }

    let mut st = shared.state();
    let res = ResKey::new("", "pods");
    let mut pod = st
        .get(&res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let refuse = |why: String| {
        ApiError::conflict_message(
            "",
            "pods/binding",
            name,
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
            Vec::new(),
        )
    };
    if write::is_deleting(&pod) {
        return Err(refuse(format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        )));
    }
    let assigned = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !assigned.is_empty() {
        return Err(refuse(format!(
            "pod {name} is already assigned to node \"{assigned}\""
        )));
    }
    pod["spec"]["nodeName"] = json!(node);
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": write::now()});
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conditions.push(scheduled);
    pod["status"]["conditions"] = json!(conditions);
    write::replace_internal(&mut st, &res, pod)?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}
