//! OpenAPI v3 documents, enough for kubectl: the root index, and per group/version the PATCH
//! operations (with `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, which
//! kubectl checks before relying on server-side `fieldValidation=Strict`) plus the CRD schemas
//! under components for `kubectl explain`.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

use super::discovery;
use super::store::State;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `com.example.v1.Kind`-style schema name, as the apiserver publishes CRD schemas.
fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    let g = if group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        parts.join(".")
    };
    format!("{g}.{version}.{kind}")
}

pub fn gv_document(st: &State, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<_> = st
        .defs
        .values()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
        .collect();
    if defs.is_empty() {
        return None;
    }
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for d in defs {
        let gvk = json!([{"group": group, "version": version, "kind": d.kind}]);
        let base = format!("/{}", gv_path(group, version));
        let item = if d.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{base}/{}/{{name}}", d.plural)
        };
        let sname = schema_name(group, version, &d.kind);
        let reference = json!({"$ref": format!("#/components/schemas/{sname}")});
        let mut content = Map::new();
        for ct in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            content.insert(ct.into(), json!({"schema": {"type": "object"}}));
        }
        let op = |action: &str| {
            json!({
                "x-kubernetes-group-version-kind": gvk[0],
                "x-kubernetes-action": action,
                "operationId": format!("{action}{}", d.kind),
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
            })
        };
        let mut patch = op("patch");
        patch["parameters"] = json!([
            param("dryRun"),
            param("fieldManager"),
            param("fieldValidation"),
            param("force")
        ]);
        patch["requestBody"] = json!({"content": content, "required": true});
        let mut put = op("put");
        put["parameters"] = json!([
            param("dryRun"),
            param("fieldManager"),
            param("fieldValidation")
        ]);
        paths.insert(
            item,
            json!({"get": op("get"), "put": put, "patch": patch, "delete": op("delete")}),
        );
        let mut schema = d.schema(version).cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = gvk;
        schemas.insert(sname, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

pub fn root(st: &State) -> Value {
    let mut paths = Map::new();
    for (g, v) in discovery::group_versions(st) {
        let mut h = DefaultHasher::new();
        gv_document(st, &g, &v).map(|d| d.to_string()).hash(&mut h);
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", h.finish())}),
        );
    }
    json!({"paths": paths})
}
