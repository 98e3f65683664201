//! Structural schema handling for custom resources, as the kube-apiserver does it on writes:
//! pruning of unknown fields, defaulting, and validation (OpenAPI v3 keywords plus CEL
//! `x-kubernetes-validations`, including transition rules against the stored object).
//!
//! The fake apiserver calls these on every create, update and patch of a custom resource, and
//! the example-manifest tests call them directly, so a manifest that passes here is one the
//! real apiserver accepts for the same CRD. Messages follow the apiserver's wording
//! (`spec.x: Invalid value: 11: spec.x in body should be less than or equal to 10`) so tests
//! and users see what `kubectl apply` would print. CEL evaluation is kube-rs's `kube-cel`.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// One rejected field, reported the way the apiserver does: a JSON path and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.rules[0].set.impact`.
    pub path: String,
    /// Human-readable reason, e.g. `Invalid value: 11: … should be less than or equal to 10`.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Root fields every object has whatever its schema says.
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Removes fields the schema does not know (unless `x-kubernetes-preserve-unknown-fields`)
/// and returns their paths, so a caller can reject them under `fieldValidation=Strict`.
/// `metadata` is left to the apiserver's ObjectMeta handling.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = obj {
        let props = schema.get("properties").and_then(Value::as_object);
        map.retain(|key, value| {
            if ROOT_FIELDS.contains(&key.as_str()) {
                return true;
            }
            match props.and_then(|p| p.get(key)) {
                Some(sub) if drops_null(sub, value) => false,
                Some(sub) => {
                    prune_value(sub, value, key, &mut unknown);
                    true
                }
                None => {
                    unknown.push(key.clone());
                    false
                }
            }
        });
    }
    unknown
}

/// Whether a property's `null` is pruned: the apiserver drops null values of fields whose
/// schema is not `nullable` before defaulting and validation (so `field: null` means absent).
fn drops_null(schema: &Value, value: &Value) -> bool {
    value.is_null() && schema.get("nullable") != Some(&Value::Bool(true))
}

fn prune_value(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (key, v) in map.iter_mut() {
                    prune_value(additional, v, &format!("{path}[{key}]"), unknown);
                }
                return;
            }
            if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                return;
            }
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                // An object schema without properties keeps nothing (unless preserved).
                if schema.get("type").and_then(Value::as_str) == Some("object") {
                    unknown.extend(map.keys().map(|k| format!("{path}.{k}")));
                    map.clear();
                }
                return;
            };
            map.retain(|key, v| match props.get(key) {
                Some(sub) if drops_null(sub, v) => false,
                Some(sub) => {
                    prune_value(sub, v, &format!("{path}.{key}"), unknown);
                    true
                }
                None => {
                    unknown.push(format!("{path}.{key}"));
                    false
                }
            });
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default` values of absent properties whose parent object exists, as the
/// apiserver does before validation and storage.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    *obj = kube_cel::apply_defaults(schema, obj);
}

/// Validates `obj` (a whole object: apiVersion, kind, metadata, spec, status) against the
/// version's `openAPIV3Schema`. `old` is the stored object on updates, for transition rules
/// (`oldSelf`). Returns every violation; empty means valid.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let (Some(props), Value::Object(map)) =
        (schema.get("properties").and_then(Value::as_object), obj)
    {
        for (key, value) in map {
            if key == "metadata" {
                continue;
            }
            if let Some(sub) = props.get(key) {
                check(sub, value, key, &mut errors);
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    errors.push(required_error(name));
                }
            }
        }
    }
    // CEL rules only run on structurally valid objects (the apiserver does the same:
    // a type error would otherwise surface as a confusing evaluation failure).
    if errors.is_empty()
        && let Err(cel_errors) = CEL.with(|cel| cel.validate(schema, obj, old))
    {
        errors.extend(cel_errors.into_vec().into_iter().map(|e| FieldError {
            path: e.field_path.clone(),
            message: format!(
                "Invalid value: {}: {}",
                type_name_of(at_path(obj, &e.field_path)),
                e.message
            ),
        }));
    }
    errors
}

thread_local! {
    /// `kube_cel::Validator` is `Send` but not `Sync`; one per thread avoids a lock and
    /// re-registering every CEL function on each call.
    static CEL: kube_cel::Validator = kube_cel::Validator::new();
}

fn required_error(path: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: "Required value".to_owned(),
    }
}

fn invalid(path: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: format!("Invalid value: {}: {detail}", display_value(value)),
    }
}

fn display_value(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

fn type_name_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::Object(_)) | None => "\"object\"".to_owned(),
        Some(other) => display_value(other),
    }
}

/// Resolves a simple dotted path with `[i]` indexes, as kube-cel reports them.
fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = obj;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = segment
            .split_once('[')
            .map_or((segment, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes
            .split('[')
            .map(|i| i.trim_end_matches(']'))
            .filter(|i| !i.is_empty())
        {
            current = match index.parse::<usize>() {
                Ok(i) => current.get(i)?,
                Err(_) => current.get(index)?,
            };
        }
    }
    Some(current)
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(invalid(
                path,
                value,
                format!(
                    "{path} in body must be of type {}: \"null\"",
                    expected_type(schema)
                ),
            ));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(invalid(
                path,
                value,
                format!("{path} in body must be of type integer or string"),
            ));
        }
        return;
    }
    if !type_matches(schema, value) {
        errors.push(invalid(
            path,
            value,
            format!(
                "{path} in body must be of type {}: \"{}\"",
                expected_type(schema),
                json_type(value)
            ),
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(Value::to_string).collect();
        errors.push(FieldError {
            path: path.to_owned(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                value,
                supported.join(", ")
            ),
        });
    }
    match value {
        Value::Number(n) => {
            check_number(schema, value, n.as_f64().unwrap_or_default(), path, errors)
        }
        Value::String(s) => check_string(schema, value, s, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(map) => check_object(schema, map, path, errors),
        _ => {}
    }
}

fn expected_type(schema: &Value) -> &str {
    schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("integer") => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        Some("number") => value.is_number(),
        Some(expected) => json_type(value) == expected,
    }
}

fn check_number(schema: &Value, value: &Value, n: f64, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
        if n < min || (exclusive && n == min) {
            let word = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(invalid(
                path,
                value,
                format!("{path} in body should be {word} {}", bound(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
        if n > max || (exclusive && n == max) {
            let word = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(invalid(
                path,
                value,
                format!("{path} in body should be {word} {}", bound(max)),
            ));
        }
    }
}

fn bound(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn check_string(schema: &Value, value: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError {
            path: path.to_owned(),
            message: format!("Too long: may not be more than {max} bytes"),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errors.push(invalid(
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => {
                errors.push(invalid(
                    path,
                    value,
                    format!("{path} in body should match '{pattern}'"),
                ));
            }
            Ok(_) => {}
            Err(e) => errors.push(invalid(
                path,
                value,
                format!("schema pattern does not compile: {e}"),
            )),
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError {
            path: path.to_owned(),
            message: format!("Too many: {}: must have at most {max} items", items.len()),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(invalid(
            path,
            &Value::Array(items.to_vec()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(key.clone()) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        message: format!(
                            "Duplicate value: {{{}}}",
                            keys.iter()
                                .zip(&key)
                                .map(|(k, v)| format!("\"{k}\":{v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    });
                }
            }
        }
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        message: format!("Duplicate value: {item}"),
                    });
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                errors.push(required_error(&format!("{path}.{name}")));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in map {
        if let Some(sub) = props.and_then(|p| p.get(key)) {
            check(sub, value, &format!("{path}.{key}"), errors);
        } else if let Some(sub) = additional {
            check(sub, value, &format!("{path}[{key}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"},
                        "score": {"type": "integer", "minimum": 0, "maximum": 10, "default": 3},
                        "kind": {"type": "string", "enum": ["a", "b"]},
                        "ref": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "ref is immutable"}]
                        },
                        "conditions": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["type"],
                            "items": {"type": "object", "properties": {"type": {"type": "string"}}}
                        },
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        })
    }

    #[test]
    fn valid_objects_pass() {
        let obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"}, "spec": {"name": "ok", "score": 10}});
        assert_eq!(validate(&schema(), &obj, None), vec![]);
    }

    #[test]
    fn ranges_enums_types_patterns_and_required_fields_are_reported_with_paths() {
        let obj = json!({"spec": {"name": "Not-OK", "score": 11, "kind": "c"}});
        let errors: Vec<String> = validate(&schema(), &obj, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(errors.contains(&"spec.score: Invalid value: 11: spec.score in body should be less than or equal to 10".to_owned()), "{errors:?}");
        assert!(
            errors.contains(
                &"spec.kind: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_owned()
            ),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.name: Invalid value: \"Not-OK\"")),
            "{errors:?}"
        );

        let missing = validate(&schema(), &json!({"spec": {}}), None);
        assert_eq!(
            missing,
            vec![FieldError {
                path: "spec.name".into(),
                message: "Required value".into()
            }]
        );

        let wrong_type = validate(
            &schema(),
            &json!({"spec": {"name": "a", "score": "high"}}),
            None,
        );
        assert_eq!(wrong_type[0].path, "spec.score");
        assert!(
            wrong_type[0].message.contains("must be of type integer"),
            "{wrong_type:?}"
        );
    }

    #[test]
    fn duplicate_list_map_keys_are_rejected() {
        let obj =
            json!({"spec": {"name": "a", "conditions": [{"type": "Ready"}, {"type": "Ready"}]}});
        let errors = validate(&schema(), &obj, None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.conditions[1]");
    }

    #[test]
    fn cel_transition_rules_see_the_old_object() {
        let old = json!({"spec": {"name": "a", "ref": {"name": "one"}}});
        let same = old.clone();
        assert_eq!(validate(&schema(), &same, Some(&old)), vec![]);
        let changed = json!({"spec": {"name": "a", "ref": {"name": "two"}}});
        let errors = validate(&schema(), &changed, Some(&old));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.ref");
        assert!(errors[0].message.contains("ref is immutable"), "{errors:?}");
        // Creation does not evaluate transition rules.
        assert_eq!(validate(&schema(), &changed, None), vec![]);
    }

    #[test]
    fn pruning_drops_unknown_fields_but_keeps_preserved_ones() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "labels": {"a": "b"}},
            "spec": {"name": "a", "typo": 1, "free": {"anything": {"goes": true}}},
            "extra": true
        });
        let mut unknown = prune(&schema(), &mut obj);
        unknown.sort();
        assert_eq!(unknown, vec!["extra".to_owned(), "spec.typo".to_owned()]);
        assert_eq!(obj["spec"]["free"]["anything"]["goes"], true);
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn defaults_fill_absent_fields() {
        let mut obj = json!({"spec": {"name": "a"}});
        apply_defaults(&schema(), &mut obj);
        assert_eq!(obj["spec"]["score"], 3);
    }
}
