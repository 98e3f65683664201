//! The resource verbs: get, list (selectors, pagination, resourceVersion semantics), watch,
//! create, replace, patch (merge, JSON, strategic, server-side apply), delete and
//! deletecollection, on the main resource and `/status`.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::{HeaderValue, Method, header};
use serde_json::{Value, json};

use super::Shared;
use super::binding;
use super::error::ApiError;
use super::gc::{self, DeleteOpts, Propagation};
use super::http::{Req, ResourcePath, json_response};
use super::patch::{self, PatchType};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::ssa::{self, Manager};
use super::store::{ResourceDef, State, name_of};
use super::table::Rendering;
use super::watch::{self, WatchReq};
use super::write::{self, FieldValidation, Sub, Tracking, WriteCtx};

/// Everything resolved about the addressed resource.
struct Target {
    def: Arc<ResourceDef>,
    rp: ResourcePath,
    sub: Sub,
}

impl Target {
    fn ns(&self) -> &str {
        if self.def.namespaced {
            self.rp.ns.as_deref().unwrap_or("")
        } else {
            ""
        }
    }

    fn name(&self) -> &str {
        self.rp.name.as_deref().unwrap_or("")
    }
}

fn resolve(shared: &Shared, rp: ResourcePath) -> Result<Target, ApiError> {
    let def = shared
        .state()
        .def(&rp.group, &rp.version, &rp.plural)
        .ok_or_else(ApiError::path_not_found)?;
    if rp.ns.is_some() && !def.namespaced {
        return Err(ApiError::path_not_found());
    }
    if rp.ns.is_none() && def.namespaced && rp.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    let sub = match rp.sub.as_deref() {
        None => Sub::Main,
        Some("status") if def.status => Sub::Status,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    Ok(Target { def, rp, sub })
}

pub fn resource(shared: &Arc<Shared>, rp: ResourcePath, req: &Req) -> Result<Response, ApiError> {
    if rp.group.is_empty() && rp.plural == "pods" && rp.sub.as_deref() == Some("binding") {
        return binding::bind(shared, &rp, req);
    }
    let t = resolve(shared, rp)?;
    let watch = req.is_watch();
    if !watch
        && let Some(code) =
            shared
                .faults
                .draw_error(req.method.as_str(), &t.def.plural, &t.def.kind)
    {
        return Err(ApiError::injected(code, shared.faults.retry_after()));
    }
    let is_write = req.method == Method::PUT || req.method == Method::PATCH;
    if is_write
        && shared
            .faults
            .take_conflict(&t.def.plural, &t.def.kind, t.sub == Sub::Status)
    {
        return Err(ApiError::conflict(&t.def.group, &t.def.plural, t.name()));
    }
    let render = Rendering::from_request(&req.accept, req.q("includeObject"));
    match (&req.method, t.rp.name.is_some()) {
        (&Method::GET, true) if watch => watch_resource(shared, &t, req, render),
        (&Method::GET, true) => get(shared, &t, render),
        (&Method::GET, false) if watch => watch_resource(shared, &t, req, render),
        (&Method::GET, false) => list(shared, &t, req, render),
        (&Method::POST, false) => create(shared, &t, req),
        (&Method::PUT, true) => replace(shared, &t, req),
        (&Method::PATCH, true) => patch(shared, &t, req),
        (&Method::DELETE, true) => delete(shared, &t, req),
        (&Method::DELETE, false) => delete_collection(shared, &t, req),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn selectors(t: &Target, req: &Req) -> Result<Selectors, ApiError> {
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""))?;
    fields.check_supported(&t.def, &t.rp.version)?;
    Ok(Selectors {
        labels: LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?,
        fields,
    })
}

fn get(shared: &Shared, t: &Target, render: Rendering) -> Result<Response, ApiError> {
    let st = shared.state();
    let obj = st
        .get(&t.def.storage, t.ns(), t.name())
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, t.name()))?;
    let wire = t.def.to_wire(&t.rp.version, obj);
    Ok(json_response(
        200,
        &render.one(&t.def, &t.rp.version, wire),
        &[],
    ))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Continue tokens carry the list's resourceVersion and the last key returned.
fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let s = unhex(token).ok_or_else(bad)?;
    let mut it = s.splitn(3, '\n');
    let rv = it.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    Ok((
        rv,
        it.next().ok_or_else(bad)?.to_string(),
        it.next().ok_or_else(bad)?.to_string(),
    ))
}

const TOO_OLD_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Builds a list answer (items in served form) under the state lock.
fn list_items(
    st: &State,
    t: &Target,
    req: &Req,
) -> Result<(Vec<Value>, u64, Option<String>), ApiError> {
    let sel = selectors(t, req)?;
    let limit: usize = req.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let ns = t.rp.ns.as_deref().filter(|_| t.def.namespaced);
    let (list_rv, after, objs) = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, ns_after, name_after) = decode_continue(token)?;
            let snap = st
                .snapshot(&t.def.storage, ns, rv)
                .ok_or_else(|| ApiError::expired(TOO_OLD_CONTINUE))?;
            (rv, Some((ns_after, name_after)), snap)
        }
        None => {
            let rv = req
                .q("resourceVersion")
                .filter(|r| !r.is_empty() && *r != "0");
            let requested: Option<u64> = match rv {
                Some(r) => Some(r.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version \"{r}\""))
                })?),
                None => None,
            };
            match (requested, req.q("resourceVersionMatch")) {
                (Some(r), Some("Exact")) => {
                    let snap = st.snapshot(&t.def.storage, ns, r).ok_or_else(|| {
                        ApiError::expired(format!("too old resource version: {r} ({})", st.horizon))
                    })?;
                    (r, None, snap)
                }
                (Some(r), _) if r > st.rv => return Err(ApiError::too_large_rv()),
                _ => {
                    let snap = st.snapshot(&t.def.storage, ns, st.rv).unwrap_or_default();
                    (st.rv, None, snap)
                }
            }
        }
    };
    let mut items = Vec::new();
    let mut next = None;
    for (key, obj) in objs
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
    {
        let wire = t.def.to_wire(&t.rp.version, obj);
        if !sel.matches(&wire) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            next = Some(hex(&format!("{list_rv}\n{}\n{}", key.0, key.1)));
            break;
        }
        items.push(wire);
    }
    // A page ending exactly at the last match gets no continue token.
    if let (Some(_), Some(last)) = (&next, items.last()) {
        let last_key = (
            last.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            name_of(last).to_string(),
        );
        let more = objs
            .iter()
            .filter(|(k, _)| **k > last_key)
            .any(|(_, o)| sel.matches(&t.def.to_wire(&t.rp.version, o)));
        if more {
            next = Some(hex(&format!("{list_rv}\n{}\n{}", last_key.0, last_key.1)));
        } else {
            next = None;
        }
    }
    Ok((items, list_rv, next))
}

fn list(shared: &Shared, t: &Target, req: &Req, render: Rendering) -> Result<Response, ApiError> {
    let (items, rv, next) = list_items(&shared.state(), t, req)?;
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = next {
        meta["continue"] = json!(c);
    }
    let body = render.list(&t.def, &t.rp.version, items, meta);
    Ok(json_response(200, &body, &[]))
}

fn watch_resource(
    shared: &Arc<Shared>,
    t: &Target,
    req: &Req,
    render: Rendering,
) -> Result<Response, ApiError> {
    let mut sel = selectors(t, req)?;
    if let Some(name) = &t.rp.name {
        // GET .../name?watch=true is the legacy single-object watch.
        sel.fields = FieldSelector::parse(&format!("metadata.name={name}"))?;
    }
    let wr = WatchReq {
        def: t.def.clone(),
        version: t.rp.version.clone(),
        ns: t.rp.ns.clone().filter(|_| t.def.namespaced),
        sel,
        rv: req.q("resourceVersion").map(String::from),
        bookmarks: req.q("allowWatchBookmarks") == Some("true"),
        send_initial: req.q("sendInitialEvents") == Some("true"),
        timeout: req
            .q("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs),
        render,
    };
    let mut resp = Response::new(watch::start(shared.clone(), wr));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Ok(resp)
}

/// Parses a JSON or YAML request body.
fn parse_body(req: &Req) -> Result<Value, ApiError> {
    if req.content_type.contains("yaml") {
        serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if req.content_type.contains("protobuf") {
        Err(ApiError::unsupported_media(
            "the fake apiserver only speaks JSON",
        ))
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn write_ctx(t: &Target, req: &Req) -> Result<WriteCtx, ApiError> {
    let manager = match req.q("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => req
            .user_agent
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteCtx {
        def: t.def.clone(),
        version: t.rp.version.clone(),
        manager,
        validation: FieldValidation::parse(req.q("fieldValidation"))?,
        dry_run: req.q("dryRun") == Some("All"),
    })
}

fn written(shared: &Shared, t: &Target, w: write::Written) -> Response {
    let _ = shared;
    json_response(w.code, &t.def.to_wire(&t.rp.version, &w.obj), &w.warnings)
}

fn create(shared: &Shared, t: &Target, req: &Req) -> Result<Response, ApiError> {
    let body = parse_body(req)?;
    let ctx = write_ctx(t, req)?;
    let w = write::create(
        &mut shared.state(),
        &ctx,
        t.rp.ns.as_deref(),
        body,
        Tracking::Update,
    )?;
    Ok(written(shared, t, w))
}

fn replace(shared: &Shared, t: &Target, req: &Req) -> Result<Response, ApiError> {
    let body = parse_body(req)?;
    // Custom resources refuse unconditional updates, like the real server.
    let rv = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if t.def.custom
        && rv.is_empty()
        && shared
            .state()
            .get(&t.def.storage, t.ns(), t.name())
            .is_some()
    {
        return Err(ApiError::invalid(
            &t.def.group,
            &t.def.kind,
            t.name(),
            &[(
                "metadata.resourceVersion".into(),
                "Invalid value: 0x0: must be specified for an update".into(),
            )],
        ));
    }
    let ctx = write_ctx(t, req)?;
    let w = write::update(
        &mut shared.state(),
        &ctx,
        t.ns(),
        t.name(),
        body,
        t.sub,
        Tracking::Update,
    )?;
    Ok(written(shared, t, w))
}

fn patch(shared: &Shared, t: &Target, req: &Req) -> Result<Response, ApiError> {
    let accepted = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
    let pt = PatchType::from_content_type(&req.content_type)
        .ok_or_else(|| ApiError::unsupported_media(accepted))?;
    if pt == PatchType::Strategic && t.def.custom {
        return Err(ApiError::unsupported_media(accepted));
    }
    let ctx = write_ctx(t, req)?;
    if pt == PatchType::Apply {
        return apply(shared, t, req, &ctx);
    }
    let mut st = shared.state();
    let existing = st
        .get(&t.def.storage, t.ns(), t.name())
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, t.name()))?;
    let mut doc = t.def.to_wire(&t.rp.version, existing);
    patch::apply_patch(pt, &mut doc, &req.body, ctx.lists())?;
    let w = write::update(
        &mut st,
        &ctx,
        t.ns(),
        t.name(),
        doc,
        t.sub,
        Tracking::Update,
    )?;
    Ok(written(shared, t, w))
}

fn apply(shared: &Shared, t: &Target, req: &Req, ctx: &WriteCtx) -> Result<Response, ApiError> {
    if req.q("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::apply_needs_field_manager());
    }
    let config: Value = serde_yaml::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "apply configuration must be an object",
        ));
    }
    if let Some(kind) = config.get("kind").and_then(Value::as_str)
        && kind != t.def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the apply configuration ({kind}) does not match the kind of the resource ({})",
            t.def.kind
        )));
    }
    // Server-side apply types the configuration against the CRD's schema before anything
    // else: a field the schema does not declare is a 500, whatever `fieldValidation` says
    // (pruning with a warning applies to create and update, not to apply).
    if let Some(schema) = t.def.schema(&t.rp.version) {
        let mut typed = config.clone();
        let undeclared = crate::schema::prune(schema, &mut typed)
            .into_iter()
            .find(|p| !(p.starts_with("metadata") || p == "apiVersion" || p == "kind"));
        if let Some(path) = undeclared {
            let ns = config
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(ApiError::internal(format!(
                "failed to create typed patch object ({ns}/{}; {}, Kind={}): .{path}: field not declared in schema",
                name_of(&config),
                t.def.api_version(&t.rp.version),
                t.def.kind
            )));
        }
    }
    let cfg_name = name_of(&config);
    if !cfg_name.is_empty() && cfg_name != t.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({cfg_name}) does not match the name on the URL ({})",
            t.name()
        )));
    }
    // Only the addressed part of the object is applied.
    let mut part = config.clone();
    if let Some(m) = part.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        match t.sub {
            Sub::Status => m.retain(|k, _| k == "status"),
            Sub::Main if t.def.status => {
                m.remove("status");
            }
            Sub::Main => {}
        }
    }
    let me = Manager {
        name: &ctx.manager,
        apply: true,
        subresource: t.sub.name(),
    };
    let force = req.q("force") == Some("true");
    let api_version = t.def.api_version(&t.rp.version);
    let mut st = shared.state();
    let live = st
        .get(&t.def.storage, t.ns(), t.name())
        .map(|o| t.def.to_wire(&t.rp.version, o));
    if live.is_none() && t.sub == Sub::Status {
        return Err(ApiError::not_found(&t.def.group, &t.def.plural, t.name()));
    }
    // A resourceVersion in the configuration is a precondition, as on a real server: an
    // apply built from an older copy is refused.
    if let Some(rv) = config
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        && live
            .as_ref()
            .and_then(|l| l.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(&t.def.group, &t.def.plural, t.name()));
    }
    let mut merged = ssa::apply(live.as_ref(), &part, &me, force, &api_version, ctx.lists()).map_err(|conflicts| {
        let rendered: Vec<String> = conflicts.iter().map(|c| format!("conflict with \"{}\": {}", c.manager, c.path)).collect();
        let causes = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.path}))
            .collect();
        let noun = if conflicts.len() == 1 { "conflict" } else { "conflicts" };
        ApiError::conflict_message(
            &t.def.group,
            &t.def.plural,
            t.name(),
            format!("Apply failed with {} {noun}: {}", conflicts.len(), rendered.join("\n")),
            causes,
        )
    })?;
    merged["apiVersion"] = json!(api_version);
    merged["kind"] = json!(t.def.kind);
    merged["metadata"]["name"] = json!(t.name());
    if t.def.namespaced {
        merged["metadata"]["namespace"] = json!(t.ns());
    }
    let w = match live {
        None => write::create(
            &mut st,
            ctx,
            Some(t.ns()).filter(|_| t.def.namespaced),
            merged,
            Tracking::Precomputed,
        )?,
        Some(_) => write::update(
            &mut st,
            ctx,
            t.ns(),
            t.name(),
            merged,
            t.sub,
            Tracking::Precomputed,
        )?,
    };
    Ok(written(shared, t, w))
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(req.q("propagationPolicy"));
    let orphan = body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        || req.q("orphanDependents") == Some("true");
    let propagation = match policy {
        Some("Orphan") => Propagation::Orphan,
        Some("Foreground") => Propagation::Foreground,
        Some("Background") | None if !orphan => Propagation::Background,
        None => Propagation::Orphan,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "unsupported propagationPolicy: {o}"
            )));
        }
    };
    let dry = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|d| d == "All"))
        || req.q("dryRun") == Some("All");
    Ok(DeleteOpts {
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run: dry,
    })
}

fn delete(shared: &Shared, t: &Target, req: &Req) -> Result<Response, ApiError> {
    if t.sub != Sub::Main {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_opts(req)?;
    let w = gc::delete(&mut shared.state(), &t.def, t.ns(), t.name(), &opts)?;
    Ok(written(shared, t, w))
}

fn delete_collection(shared: &Shared, t: &Target, req: &Req) -> Result<Response, ApiError> {
    let opts = delete_opts(req)?;
    let sel = selectors(t, req)?;
    let mut st = shared.state();
    let ns = t.rp.ns.as_deref().filter(|_| t.def.namespaced);
    let targets: Vec<(String, String)> = st
        .list(&t.def.storage, ns)
        .into_iter()
        .filter(|o| sel.matches(&t.def.to_wire(&t.rp.version, o)))
        .map(|o| {
            (
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name_of(o).to_string(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name) in targets {
        if let Ok(w) = gc::delete(&mut st, &t.def, &ns, &name, &opts) {
            items.push(t.def.to_wire(&t.rp.version, &w.obj));
        }
    }
    let body = json!({
        "kind": format!("{}List", t.def.kind),
        "apiVersion": t.def.api_version(&t.rp.version),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    Ok(json_response(200, &body, &[]))
}
