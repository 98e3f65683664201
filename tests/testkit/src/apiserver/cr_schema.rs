//! Schema handling of custom-resource writes, as the apiserver does it: pruning of unknown
//! fields (reported per `fieldValidation`), defaulting, then validation (422 Invalid), through
//! the functions of [`crate::schema`] and the CRD version's `openAPIV3Schema`.

use serde_json::Value;

use super::error::ApiError;
use super::store::name_of;
use super::write::{FieldValidation, WriteCtx};
use crate::schema;

/// Prunes, defaults and validates a custom resource against its version's schema.
pub(crate) fn run_schema(
    ctx: &WriteCtx,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let def = &ctx.def;
    let Some(sc) = def.schema(&ctx.version) else {
        return Ok(Vec::new());
    };
    let keep = |o: &Value| {
        (
            o.get("apiVersion").cloned(),
            o.get("kind").cloned(),
            o.get("metadata").cloned(),
        )
    };
    let restore = |o: &mut Value, saved: &(Option<Value>, Option<Value>, Option<Value>)| {
        for (k, v) in [
            ("apiVersion", &saved.0),
            ("kind", &saved.1),
            ("metadata", &saved.2),
        ] {
            if let Some(v) = v {
                o[k] = v.clone();
            }
        }
    };
    let saved = keep(obj);
    let unknown: Vec<String> = schema::prune(sc, obj)
        .into_iter()
        .filter(|p| !(p.starts_with("metadata") || p == "apiVersion" || p == "kind"))
        .collect();
    restore(obj, &saved);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let msgs: Vec<String> = unknown
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        match ctx.validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "{k} in version \"{v}\" cannot be handled as a {k}: strict decoding error: {}",
                    msgs.join(", "),
                    k = def.kind,
                    v = ctx.version
                )));
            }
            FieldValidation::Warn => warnings = msgs,
            FieldValidation::Ignore => {}
        }
    }
    schema::apply_defaults(sc, obj);
    restore(obj, &saved);
    let errs = schema::validate(sc, obj, old);
    if !errs.is_empty() {
        let causes: Vec<(String, String)> = errs.into_iter().map(|e| (e.path, e.message)).collect();
        return Err(ApiError::invalid(
            &def.group,
            &def.kind,
            name_of(obj),
            &causes,
        ));
    }
    Ok(warnings)
}
