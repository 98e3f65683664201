//! The HTTP front: one axum fallback handler that parses the Kubernetes URL layout, applies
//! injected faults and latency, dispatches to discovery, OpenAPI or the resource verbs, and
//! records every request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::error::ApiError;
use super::{RequestRecord, Shared, discovery, openapi, verbs};

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// A request for a resource: `/api/v1/namespaces/{ns}/{plural}/{name}/{sub}` and friends.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

#[derive(Debug)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiV3Root,
    OpenApiV3(String, String),
    Resource(ResourcePath),
    Unknown,
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let (ns, rest) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2], "status" | "finalize")
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::Unknown;
    }
    Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        plural: rest[0].to_string(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["api", v] => Route::Resources(String::new(), v.to_string()),
        ["api", v, rest @ ..] => resource_path("", v, rest),
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::Resources(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => resource_path(g, v, rest),
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => Route::OpenApiV3(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3(g.to_string(), v.to_string()),
        _ => Route::Unknown,
    }
}

/// A parsed request, handed to the verbs.
pub struct Req {
    pub method: Method,
    pub query: Vec<(String, String)>,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
    pub body: bytes::Bytes,
}

impl Req {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.q("watch"), Some("true") | Some("1"))
    }
}

pub fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.code, &self.status(), &[]);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn header_str(parts: &http::request::Parts, name: header::HeaderName) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query_str = parts.uri.query().unwrap_or("").to_string();
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("cannot read request body: {e}")).into_response();
        }
    };
    let req = Req {
        method: parts.method.clone(),
        query,
        content_type: header_str(&parts, header::CONTENT_TYPE),
        accept: header_str(&parts, header::ACCEPT),
        user_agent: header_str(&parts, header::USER_AGENT),
        body,
    };
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let watch = req.is_watch();
    let resp = dispatch(&shared, &path, &req).unwrap_or_else(IntoResponse::into_response);
    shared.record(RequestRecord {
        method: req.method.to_string(),
        path,
        query: query_str,
        content_type: req.content_type.clone(),
        status: resp.status().as_u16(),
        watch,
    });
    resp
}

fn dispatch(shared: &Arc<Shared>, path: &str, req: &Req) -> Result<Response, ApiError> {
    let r = route(path);
    if !matches!(r, Route::Resource(_)) && req.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let st = || shared.state.lock().expect("state mutex poisoned");
    let ok = |v: Value| Ok(json_response(200, &v, &[]));
    match r {
        Route::Version => ok(discovery::version()),
        Route::CoreVersions => ok(discovery::api_versions(&shared.addr.to_string())),
        Route::Groups => ok(discovery::group_list(&st())),
        Route::Group(g) => {
            discovery::group(&st(), &g).map_or_else(|| Err(ApiError::path_not_found()), ok)
        }
        Route::Resources(g, v) => discovery::resource_list(&st(), &g, &v)
            .map_or_else(|| Err(ApiError::path_not_found()), ok),
        Route::OpenApiV3Root => ok(openapi::root(&st())),
        Route::OpenApiV3(g, v) => {
            openapi::gv_document(&st(), &g, &v).map_or_else(|| Err(ApiError::path_not_found()), ok)
        }
        Route::Resource(rp) => verbs::resource(shared, rp, req),
        Route::Unknown => Err(ApiError::path_not_found()),
    }
}
