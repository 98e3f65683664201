//! Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): a
//! meta.k8s.io/v1 Table with the CRD's additionalPrinterColumns (JSONPath evaluated here,
//! `date` columns as human ages like the real apiserver) or a kubectl-like table for built-ins.

use serde_json::{Value, json};

use super::store::ResourceDef;

/// `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

#[derive(Debug, Clone, Copy)]
pub struct TableOpts {
    pub include: IncludeObject,
}

impl TableOpts {
    /// Whether `accept` asks for a Table, and with which options.
    pub fn from_request(accept: &str, include: Option<&str>) -> Option<TableOpts> {
        let wants = accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"));
        let include = match include {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        wants.then_some(TableOpts { include })
    }
}

/// How objects are rendered, from the request's Accept header (first media type wins).
#[derive(Debug, Clone, Copy)]
pub enum Rendering {
    Object,
    /// `as=Table;g=meta.k8s.io`: server-side printing for kubectl.
    Table(TableOpts),
    /// `as=PartialObjectMetadata(List);g=meta.k8s.io`: metadata only (kube's metadata APIs).
    Metadata,
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

impl Rendering {
    pub fn from_request(accept: &str, include: Option<&str>) -> Rendering {
        let first = accept.split(',').next().unwrap_or("");
        if let Some(opts) = TableOpts::from_request(accept, include) {
            Rendering::Table(opts)
        } else if first.contains("as=PartialObjectMetadata") {
            Rendering::Metadata
        } else {
            Rendering::Object
        }
    }

    /// One served object (a get answer or a watch event's object).
    pub fn one(&self, def: &ResourceDef, version: &str, obj: Value) -> Value {
        match self {
            Rendering::Object => obj,
            Rendering::Table(opts) => table_for(def, version, &[obj], opts, None),
            Rendering::Metadata => partial_metadata(&obj),
        }
    }

    /// A list answer with its ListMeta.
    pub fn list(&self, def: &ResourceDef, version: &str, items: Vec<Value>, meta: Value) -> Value {
        match self {
            Rendering::Object => json!({
                "kind": format!("{}List", def.kind),
                "apiVersion": def.api_version(version),
                "metadata": meta,
                "items": items,
            }),
            Rendering::Table(opts) => table_for(def, version, &items, opts, Some(meta)),
            Rendering::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Port of k8s.io/apimachinery/pkg/util/duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    } else if secs < 0 {
        return "0s".into();
    } else if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Age of an RFC 3339 timestamp, rendered as a human duration.
pub fn age(ts: Option<&Value>) -> Value {
    let Some(ts) = ts
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return json!("<unknown>");
    };
    let secs = jiff::Timestamp::now().as_second() - ts.as_second();
    json!(human_duration(secs))
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        negate: bool,
        value: String,
    },
}

fn parse_jsonpath(expr: &str) -> Vec<Step> {
    let e = expr.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = e;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = find_close(r) else { break };
            let inner = r[..close].trim();
            rest = &r[close + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                let (lhs, negate, rhs) = match f.split_once("!=") {
                    Some((l, r)) => (l, true, r),
                    None => match f.split_once("==") {
                        Some((l, r)) => (l, false, r),
                        None => continue,
                    },
                };
                let path = lhs
                    .trim()
                    .trim_start_matches('@')
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                let value = rhs
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string();
                steps.push(Step::Filter {
                    path,
                    negate,
                    value,
                });
            } else {
                steps.push(Step::Field(
                    inner.trim_matches(|c| c == '"' || c == '\'').to_string(),
                ));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    steps
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluates the JSONPath subset printer columns use; all results in order.
pub fn eval_jsonpath<'v>(obj: &'v Value, expr: &str) -> Vec<&'v Value> {
    let mut cur = vec![obj];
    for step in parse_jsonpath(expr) {
        let mut next = Vec::new();
        for v in cur {
            match &step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => next.extend(v.as_array().into_iter().flatten()),
                Step::Filter {
                    path,
                    negate,
                    value,
                } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut x = Some(item);
                        for p in path {
                            x = x.and_then(|x| x.get(p));
                        }
                        let eq = x.is_some_and(|x| scalar_string(x) == *value);
                        if x.is_some() && eq != *negate {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )
}

fn age_column() -> Value {
    column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    )
}

fn custom_cell(obj: &Value, col: &Value) -> Value {
    let path = col.get("jsonPath").and_then(Value::as_str).unwrap_or("");
    let found = eval_jsonpath(obj, path);
    let ty = col.get("type").and_then(Value::as_str).unwrap_or("string");
    match found.as_slice() {
        [] => Value::Null,
        [one] if ty == "date" => age(Some(one)),
        [one] => (*one).clone(),
        many => json!(
            many.iter()
                .map(|v| scalar_string(v))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|s| s["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let terminated_reason = statuses.iter().find_map(|s| {
        s.pointer("/state/terminated/reason")
            .and_then(Value::as_str)
    });
    let phase = o
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let mut status = terminated_reason.unwrap_or(phase).to_string();
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        age(o.pointer("/metadata/creationTimestamp")),
        o.pointer("/status/podIP")
            .cloned()
            .unwrap_or(json!("<none>")),
        o.pointer("/spec/nodeName")
            .cloned()
            .unwrap_or(json!("<none>")),
    ]
}

/// Renders the cells after Name for one object.
type CellFn = Box<dyn Fn(&Value) -> Vec<Value>>;

fn columns_and_cells(def: &ResourceDef, version: &str) -> (Vec<Value>, CellFn) {
    let created = |o: &Value| age(o.pointer("/metadata/creationTimestamp"));
    if def.custom {
        let cols = def.columns.get(version).cloned().unwrap_or_default();
        if cols.is_empty() {
            return (
                vec![name_column(), age_column()],
                Box::new(move |o| vec![created(o)]),
            );
        }
        let defs: Vec<Value> = cols
            .iter()
            .map(|c| {
                column(
                    c["name"].as_str().unwrap_or(""),
                    c["type"].as_str().unwrap_or("string"),
                    c["format"].as_str().unwrap_or(""),
                    c["description"].as_str().unwrap_or(""),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        let mut all = vec![name_column()];
        all.extend(defs);
        return (
            all,
            Box::new(move |o| cols.iter().map(|c| custom_cell(o, c)).collect()),
        );
    }
    let s = |p: &'static str| move |o: &Value| o.pointer(p).cloned().unwrap_or(json!("<none>"));
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => (
            vec![
                name_column(),
                column(
                    "Ready",
                    "string",
                    "",
                    "The aggregate readiness state of this pod for accepting traffic.",
                    0,
                ),
                column(
                    "Status",
                    "string",
                    "",
                    "The aggregate status of the containers in this pod.",
                    0,
                ),
                column(
                    "Restarts",
                    "string",
                    "",
                    "The number of times the containers in this pod have been restarted.",
                    0,
                ),
                age_column(),
                column("IP", "string", "", "IP address allocated to the pod.", 1),
                column(
                    "Node",
                    "string",
                    "",
                    "Name of the Node this pod is assigned to.",
                    1,
                ),
            ],
            Box::new(pod_cells),
        ),
        ("", "namespaces") => (
            vec![
                name_column(),
                column("Status", "string", "", "The status of the namespace", 0),
                age_column(),
            ],
            Box::new(move |o| vec![s("/status/phase")(o), created(o)]),
        ),
        ("", "configmaps") | ("", "secrets") => (
            vec![
                name_column(),
                column("Data", "string", "", "Number of entries in data", 0),
                age_column(),
            ],
            Box::new(move |o| {
                let n = o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
                vec![json!(n), created(o)]
            }),
        ),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (
            vec![name_column(), column("Created At", "date", "", "", 0)],
            Box::new(move |o| {
                vec![
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ]
            }),
        ),
        ("", "events") | ("events.k8s.io", "events") => (
            vec![
                column("Last Seen", "string", "", "", 0),
                column("Type", "string", "", "", 0),
                column("Reason", "string", "", "", 0),
                column("Object", "string", "", "", 0),
                column("Message", "string", "", "", 0),
            ],
            Box::new(move |o| {
                let ts = ["lastTimestamp", "deprecatedLastTimestamp", "eventTime"]
                    .iter()
                    .find_map(|k| o.get(*k).filter(|v| !v.is_null()));
                let obj = o
                    .get("involvedObject")
                    .or(o.get("regarding"))
                    .cloned()
                    .unwrap_or(json!({}));
                vec![
                    age(ts.or(o.pointer("/metadata/creationTimestamp"))),
                    s("/type")(o),
                    s("/reason")(o),
                    json!(format!(
                        "{}/{}",
                        obj["kind"].as_str().unwrap_or("").to_lowercase(),
                        obj["name"].as_str().unwrap_or("")
                    )),
                    o.get("message")
                        .or(o.get("note"))
                        .cloned()
                        .unwrap_or(json!("")),
                ]
            }),
        ),
        _ => (
            vec![name_column(), age_column()],
            Box::new(move |o| vec![created(o)]),
        ),
    }
}

/// Builds the Table for served objects. `list_meta` carries resourceVersion/continue of lists.
pub fn table_for(
    def: &ResourceDef,
    version: &str,
    objs: &[Value],
    opts: &TableOpts,
    list_meta: Option<Value>,
) -> Value {
    let (columns, cells) = columns_and_cells(def, version);
    let name_first = columns.first().is_some_and(|c| c["name"] == json!("Name"));
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row_cells = Vec::new();
            if name_first {
                row_cells.push(o.pointer("/metadata/name").cloned().unwrap_or(json!("")));
            }
            row_cells.extend(cells(o));
            let mut row = json!({"cells": row_cells});
            match opts.include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let rv = objs
        .iter()
        .filter_map(|o| o.pointer("/metadata/resourceVersion").cloned())
        .next_back();
    let metadata = list_meta.unwrap_or_else(|| json!({"resourceVersion": rv.unwrap_or(json!(""))}));
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filter_and_fields() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"n": 3}});
        assert_eq!(
            eval_jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(eval_jsonpath(&o, ".spec.n"), vec![&json!(3)]);
        assert!(eval_jsonpath(&o, ".spec.missing").is_empty());
    }

    #[test]
    fn human_durations_match_apimachinery() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3600 * 5 + 60 * 3), "5h3m");
        assert_eq!(human_duration(3600 * 24 * 3), "3d");
    }
}
