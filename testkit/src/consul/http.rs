//! HTTP layer: routing, query parsing, request bodies and Consul-shaped responses.
//!
//! Status codes and texts follow Consul's `agent/http.go`, `agent/kvs_endpoint.go` and
//! `agent/session_endpoint.go`: parse errors of `?wait`/`?index` are 400, errors from the
//! "RPC" layer (invalid session, bad TTL, unparsable `?flags=`) are 500 with the error text,
//! ACL failures are 403, a wrong method is 405.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use super::blocking::{blocking_query, effective_wait, Watch};
use super::duration::parse_go_duration;
use super::state::{Entry, ServiceCheck, Session, SessionSpec, DEFAULT_LOCK_DELAY, SERF_CHECK_ID};
use super::{Endpoint, Shared};

type Resp = Response<Full<Bytes>>;
/// An early answer, boxed (responses are large).
type Reject = Box<Resp>;

/// Consul's well-known accessor ID of the anonymous token.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// The address `/v1/status/leader` reports (a server's RPC address).
const LEADER_ADDR: &str = "127.0.0.1:8300";

/// Handles one request: counts it, holds it while paused, answers it, and holds the answer
/// while paused.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let query = Query::parse(req.uri().query());
    let endpoint = classify(req.method(), req.uri().path());
    let blocking =
        req.method() == Method::GET && query.get("index").parse::<u64>().unwrap_or(0) > 0;
    shared.count(endpoint, blocking);
    shared.wait_unpaused().await;
    let resp = route(&shared, req, query).await;
    shared.wait_unpaused().await;
    resp
}

fn classify(method: &Method, path: &str) -> Endpoint {
    if path.starts_with("/v1/kv/") {
        return match *method {
            Method::GET => Endpoint::KvGet,
            Method::PUT => Endpoint::KvPut,
            Method::DELETE => Endpoint::KvDelete,
            _ => Endpoint::Other,
        };
    }
    if path == "/v1/session/create" {
        Endpoint::SessionCreate
    } else if path.starts_with("/v1/session/destroy/") {
        Endpoint::SessionDestroy
    } else if path.starts_with("/v1/session/renew/") {
        Endpoint::SessionRenew
    } else if path.starts_with("/v1/session/info/") {
        Endpoint::SessionInfo
    } else if path == "/v1/session/list" {
        Endpoint::SessionList
    } else if path.starts_with("/v1/session/node/") {
        Endpoint::SessionNode
    } else {
        Endpoint::Other
    }
}

// ---------------------------------------------------------------------------- queries

/// Query parameters in order, decoded as Go's `url.ParseQuery` does (`+` is a space).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Whether the parameter is present at all (`?recurse`, `?recurse=`, `?recurse=false`).
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The first value, or `""` (Go's `Values.Get`).
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Go's `Values.Encode`: sorted by key, values in order.
    fn encode(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.0.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k, v);
        }
        ser.finish()
    }
}

/// The read options every read endpoint parses (Consul's `parse`).
struct ReadOptions {
    min_index: u64,
    wait_ns: Option<i64>,
    consistency: &'static str,
}

fn parse_read_options(query: &Query) -> Result<ReadOptions, Reject> {
    let stale = query.has("stale");
    let consistent = query.has("consistent");
    if stale && consistent {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    let mut opts = ReadOptions {
        min_index: 0,
        wait_ns: None,
        consistency: if stale {
            "stale"
        } else if consistent {
            "consistent"
        } else {
            "leader"
        },
    };
    let wait = query.get("wait");
    if !wait.is_empty() {
        match parse_go_duration(wait) {
            Ok(ns) => opts.wait_ns = Some(ns),
            Err(_) => return Err(reject(StatusCode::BAD_REQUEST, "Invalid wait time")),
        }
    }
    let index = query.get("index");
    if !index.is_empty() {
        match parse_go_uint(index) {
            Ok(i) => opts.min_index = i,
            Err(_) => return Err(reject(StatusCode::BAD_REQUEST, "Invalid index")),
        }
    }
    Ok(opts)
}

/// Go's `strconv.ParseUint(s, 10, 64)`, with its error text.
fn parse_go_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// Decodes `%XX` escapes in a path; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------- responses

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn reject(status: StatusCode, body: impl Into<String>) -> Reject {
    Box::new(text(status, body))
}

fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn json<T: Serialize>(value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn rpc_error(message: impl Into<String>) -> Resp {
    text(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn method_not_allowed(method: &Method, allow: &'static str) -> Resp {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Adds the query meta headers every read carries.
fn with_meta(mut resp: Resp, index: u64, opts: &ReadOptions) -> Resp {
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from(index.max(1)),
    );
    h.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static("true"),
    );
    h.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from_static("0"),
    );
    h.insert(
        HeaderName::from_static("x-consul-effective-consistency"),
        HeaderValue::from_static(opts.consistency),
    );
    resp
}

// ---------------------------------------------------------------------------- ACL

/// What the request's token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// ACLs off, or the master token.
    All,
    /// No token under default-deny: reads of lists are filtered, everything else is denied.
    Anonymous,
}

fn request_token<'a>(req: &'a Request<Incoming>, query: &'a Query) -> &'a str {
    let from_query = query.get("token");
    if !from_query.is_empty() {
        return from_query;
    }
    if let Some(v) = req
        .headers()
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
    {
        if !v.is_empty() {
            return v;
        }
    }
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return v[7..].trim();
        }
    }
    ""
}

fn authorize(shared: &Shared, token: &str) -> Result<Access, Reject> {
    match &shared.options().acl_token {
        None => Ok(Access::All),
        Some(_) if token.is_empty() => Ok(Access::Anonymous),
        Some(master) if master == token => Ok(Access::All),
        Some(_) => Err(reject(StatusCode::FORBIDDEN, "ACL not found")),
    }
}

fn permission_denied(permission: &str, resource: &str) -> Resp {
    text(
        StatusCode::FORBIDDEN,
        format!(
            "Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR}' lacks permission \
             '{permission}' on {resource:?}"
        ),
    )
}

// ---------------------------------------------------------------------------- routing

async fn route(shared: &Arc<Shared>, req: Request<Incoming>, query: Query) -> Resp {
    let Some(path) = percent_decode(req.uri().path()) else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request");
    };
    let token = request_token(&req, &query).to_string();
    let method = req.method().clone();

    if let Some(key) = path.strip_prefix("/v1/kv/") {
        let key = key.to_string();
        return kv(shared, req, &method, &key, &query, &token).await;
    }
    if path == "/v1/kv" {
        let mut resp = empty(StatusCode::MOVED_PERMANENTLY);
        resp.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/v1/kv/"));
        return resp;
    }
    if path == "/v1/session/create" {
        if method != Method::PUT {
            return method_not_allowed(&method, "PUT");
        }
        return session_create(shared, req, &token).await;
    }
    if let Some(id) = path.strip_prefix("/v1/session/destroy/") {
        if method != Method::PUT {
            return method_not_allowed(&method, "PUT");
        }
        return session_destroy(shared, id, &token);
    }
    if let Some(id) = path.strip_prefix("/v1/session/renew/") {
        if method != Method::PUT {
            return method_not_allowed(&method, "PUT");
        }
        return session_renew(shared, id, &query, &token);
    }
    if let Some(id) = path.strip_prefix("/v1/session/info/") {
        if method != Method::GET {
            return method_not_allowed(&method, "GET");
        }
        return session_read(shared, SessionRead::Info(id), &query, &token).await;
    }
    if path == "/v1/session/list" {
        if method != Method::GET {
            return method_not_allowed(&method, "GET");
        }
        return session_read(shared, SessionRead::List, &query, &token).await;
    }
    if let Some(node) = path.strip_prefix("/v1/session/node/") {
        if method != Method::GET {
            return method_not_allowed(&method, "GET");
        }
        return session_read(shared, SessionRead::Node(node), &query, &token).await;
    }
    match path.as_str() {
        "/v1/status/leader" | "/v1/status/peers" | "/v1/agent/self" | "/v1/agent/metrics"
            if method != Method::GET =>
        {
            method_not_allowed(&method, "GET")
        }
        "/v1/status/leader" => json(&LEADER_ADDR),
        "/v1/status/peers" => json(&[LEADER_ADDR]),
        "/v1/agent/self" => agent_self(shared, &token),
        "/v1/agent/metrics" => agent_metrics(shared),
        _ => empty(StatusCode::NOT_FOUND),
    }
}

/// The request counters in Prometheus text format (`tumbler_http_requests{endpoint=...}`), for
/// `tumbler bench`'s server requests per hand-off. Real Consul's metrics differ (interval
/// summaries); this endpoint is the test server's own.
fn agent_metrics(shared: &Shared) -> Resp {
    let c = shared.counters.snapshot();
    let mut out = String::from("# TYPE tumbler_http_requests counter\n");
    for (endpoint, count) in [
        ("kv_get", c.kv_get),
        ("kv_put", c.kv_put),
        ("kv_delete", c.kv_delete),
        ("session_create", c.session_create),
        ("session_destroy", c.session_destroy),
        ("session_renew", c.session_renew),
        ("session_info", c.session_info),
        ("session_list", c.session_list),
        ("session_node", c.session_node),
        ("other", c.other),
    ] {
        out.push_str(&format!(
            "tumbler_http_requests{{endpoint=\"{endpoint}\"}} {count}\n"
        ));
    }
    text(StatusCode::OK, out)
}

fn agent_self(shared: &Shared, token: &str) -> Resp {
    if let Err(resp) = authorize(shared, token) {
        return *resp;
    }
    let opts = shared.options();
    json(&serde_json::json!({
        "Config": {
            "Datacenter": opts.datacenter,
            "NodeName": opts.node_name,
            "Server": true,
        },
        "Member": {
            "Name": opts.node_name,
            "Addr": "127.0.0.1",
        },
    }))
}

// ---------------------------------------------------------------------------- KV

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EntryJson<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Entry> for EntryJson<'a> {
    fn from(e: &'a Entry) -> Self {
        EntryJson {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            session: e.session.as_deref(),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

async fn kv(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    method: &Method,
    key: &str,
    query: &Query,
    token: &str,
) -> Resp {
    let opts = match parse_read_options(query) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    match *method {
        Method::GET if query.has("keys") => kv_keys(shared, key, query, &opts, token).await,
        Method::GET => kv_get(shared, key, query, &opts, token).await,
        Method::PUT => kv_put(shared, req, key, query, token).await,
        Method::DELETE => kv_delete(shared, key, query, token),
        _ => method_not_allowed(method, "GET, PUT, DELETE"),
    }
}

fn read_wait(shared: &Shared, opts: &ReadOptions) -> std::time::Duration {
    effective_wait(opts.wait_ns, shared.wait_limits(), shared.jitter())
}

async fn kv_get(
    shared: &Arc<Shared>,
    key: &str,
    query: &Query,
    opts: &ReadOptions,
    token: &str,
) -> Resp {
    let recurse = query.has("recurse");
    if !recurse && key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let access = match authorize(shared, token) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let wait = read_wait(shared, opts);
    if recurse {
        let watch = Watch::Prefix(key.to_string());
        let (index, mut entries) = blocking_query(
            shared.store(),
            shared.changes(),
            opts.min_index,
            wait,
            &watch,
            |st| st.kv_list(key),
        )
        .await;
        if access == Access::Anonymous {
            entries.clear();
        }
        if entries.is_empty() {
            return with_meta(empty(StatusCode::NOT_FOUND), index, opts);
        }
        let body: Vec<EntryJson<'_>> = entries.iter().map(EntryJson::from).collect();
        return with_meta(json(&body), index, opts);
    }
    if access == Access::Anonymous {
        return permission_denied("key:read", key);
    }
    let watch = Watch::Key(key.to_string());
    let (index, entry) = blocking_query(
        shared.store(),
        shared.changes(),
        opts.min_index,
        wait,
        &watch,
        |st| st.kv_get(key),
    )
    .await;
    let Some(entry) = entry else {
        return with_meta(empty(StatusCode::NOT_FOUND), index, opts);
    };
    if query.has("raw") {
        let mut resp = respond(StatusCode::OK, "text/plain", entry.value);
        let h = resp.headers_mut();
        h.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("sandbox"),
        );
        return with_meta(resp, index, opts);
    }
    with_meta(json(&[EntryJson::from(&entry)]), index, opts)
}

async fn kv_keys(
    shared: &Arc<Shared>,
    prefix: &str,
    query: &Query,
    opts: &ReadOptions,
    token: &str,
) -> Resp {
    let mut separator = "";
    if query.has("seperator") {
        separator = query.get("seperator");
    }
    if query.has("separator") {
        separator = query.get("separator");
    }
    let access = match authorize(shared, token) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let watch = Watch::Prefix(prefix.to_string());
    let (index, mut keys) = blocking_query(
        shared.store(),
        shared.changes(),
        opts.min_index,
        read_wait(shared, opts),
        &watch,
        |st| st.kv_keys(prefix, separator),
    )
    .await;
    if access == Access::Anonymous {
        keys.clear();
    }
    if keys.is_empty() && !prefix.is_empty() {
        return with_meta(empty(StatusCode::NOT_FOUND), index, opts);
    }
    with_meta(json(&keys), index, opts)
}

/// Consul's `conflictingFlags`: more than one of `flags` present is a 400.
fn conflicting_flags(query: &Query, flags: &[&str]) -> Option<Resp> {
    if flags.iter().filter(|f| query.has(f)).count() > 1 {
        return Some(text(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}\n", query.encode()),
        ));
    }
    None
}

fn too_large(len: u64, max: usize) -> Resp {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "Request body({len} bytes) too large, max size: {max} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
        ),
    )
}

/// How much of an oversized body is read and dropped before answering 413.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads and drops up to `limit` bytes of a body.
async fn drain(mut body: Incoming, limit: usize) {
    let mut seen = 0usize;
    while seen < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                seen += frame.data_ref().map_or(0, |d| d.len());
            }
            _ => return,
        }
    }
}

/// Reads a body of at most `max` bytes; the error is the response to send.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Vec<u8>, Reject> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > max as u64 {
            // Read (and drop) what the client sends, within reason, so it sees the 413
            // rather than a reset connection.
            drain(req.into_body(), DRAIN_LIMIT).await;
            return Err(Box::new(too_large(len, max)));
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Box::new(too_large(declared.unwrap_or(max as u64 + 1), max)))
        }
        Err(e) => Err(reject(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

async fn kv_put(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    key: &str,
    query: &Query,
    token: &str,
) -> Resp {
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(resp) = conflicting_flags(query, &["cas", "acquire", "release"]) {
        return resp;
    }
    let mut flags = 0;
    if query.has("flags") {
        match parse_go_uint(query.get("flags")) {
            Ok(f) => flags = f,
            Err(e) => return rpc_error(e),
        }
    }
    let mut cas = None;
    if query.has("cas") {
        match parse_go_uint(query.get("cas")) {
            Ok(c) => cas = Some(c),
            Err(e) => return rpc_error(e),
        }
    }
    let acquire = query
        .has("acquire")
        .then(|| query.get("acquire").to_string());
    let release = query
        .has("release")
        .then(|| query.get("release").to_string());
    let value = match read_body(req, shared.options().max_value_size).await {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    match authorize(shared, token) {
        Ok(Access::All) => {}
        Ok(Access::Anonymous) => return permission_denied("key:write", key),
        Err(resp) => return *resp,
    }
    let outcome = shared.write(|st, now| {
        if let Some(session) = &release {
            st.kv_unlock(key, value, flags, session)
        } else if let Some(session) = &acquire {
            st.kv_lock(key, value, flags, session, now)
        } else if let Some(cas) = cas {
            Ok(st.kv_cas(key, value, flags, cas))
        } else {
            Ok(st.kv_set(key, value, flags))
        }
    });
    match outcome {
        Ok(done) => json(&done),
        Err(e) => rpc_error(e.0),
    }
}

fn kv_delete(shared: &Arc<Shared>, key: &str, query: &Query, token: &str) -> Resp {
    if let Some(resp) = conflicting_flags(query, &["recurse", "cas"]) {
        return resp;
    }
    let recurse = query.has("recurse");
    if !recurse && key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let mut cas = None;
    if query.has("cas") {
        match parse_go_uint(query.get("cas")) {
            Ok(c) => cas = Some(c),
            Err(e) => return rpc_error(e),
        }
    }
    match authorize(shared, token) {
        Ok(Access::All) => {}
        Ok(Access::Anonymous) => return permission_denied("key:write", key),
        Err(resp) => return *resp,
    }
    let done = shared.write(|st, _| {
        if recurse {
            st.kv_delete_tree(key)
        } else if let Some(cas) = cas {
            st.kv_delete_cas(key, cas)
        } else {
            st.kv_delete(key)
        }
    });
    json(&done)
}

// ---------------------------------------------------------------------------- sessions

#[derive(Serialize)]
struct ServiceCheckJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Namespace")]
    namespace: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    node: &'a str,
    lock_delay: i64,
    behavior: &'static str,
    #[serde(rename = "TTL")]
    ttl: &'a str,
    node_checks: &'a [String],
    service_checks: Option<Vec<ServiceCheckJson<'a>>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    checks: &'a [String],
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Session> for SessionJson<'a> {
    fn from(s: &'a Session) -> Self {
        SessionJson {
            id: &s.id,
            name: &s.name,
            node: &s.node,
            lock_delay: s.lock_delay_ns,
            behavior: s.behavior.as_str(),
            ttl: &s.ttl,
            node_checks: &s.node_checks,
            service_checks: s.service_checks.as_ref().map(|checks| {
                checks
                    .iter()
                    .map(|c| ServiceCheckJson {
                        id: &c.id,
                        namespace: &c.namespace,
                    })
                    .collect()
            }),
            checks: &s.checks,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

fn sessions_json(sessions: &[Session]) -> Resp {
    let body: Vec<SessionJson<'_>> = sessions.iter().map(SessionJson::from).collect();
    json(&body)
}

/// Go's message for a JSON value of the wrong type in a struct field.
fn type_error(value: &Value, field: &str, go_type: &str) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    format!("json: cannot unmarshal {kind} into Go struct field Session.{field} of type {go_type}")
}

fn decode_string(value: &Value, field: &str, target: &mut String) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => {
            *target = s.clone();
            Ok(())
        }
        other => Err(type_error(other, field, "string")),
    }
}

fn decode_strings(value: &Value, field: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(type_error(other, field, "string")),
            })
            .collect(),
        other => Err(type_error(other, field, "[]string")),
    }
}

/// Consul's `LockDelay` decoding: a Go duration string or a number of nanoseconds; values
/// below 1000 (ns) are taken as seconds; other JSON types give 0.
fn decode_lock_delay(value: &Value) -> Result<Option<i64>, String> {
    const THRESHOLD: i64 = 1000;
    let dur = match value {
        Value::Null => return Ok(None),
        Value::String(s) => parse_go_duration(s)?,
        Value::Number(n) => n.as_f64().map_or(0, |f| f as i64),
        _ => 0,
    };
    Ok(Some(if dur < THRESHOLD {
        dur.wrapping_mul(1_000_000_000)
    } else {
        dur
    }))
}

fn decode_service_checks(value: &Value) -> Result<Option<Vec<ServiceCheck>>, String> {
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => return Err(type_error(other, "ServiceChecks", "[]structs.ServiceCheck")),
    };
    let mut checks = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(fields) = item else {
            return Err(type_error(item, "ServiceChecks", "structs.ServiceCheck"));
        };
        let mut check = ServiceCheck {
            id: String::new(),
            namespace: String::new(),
        };
        for (name, v) in fields {
            match name.to_ascii_lowercase().as_str() {
                "id" => decode_string(v, "ServiceChecks.ID", &mut check.id)?,
                "namespace" => decode_string(v, "ServiceChecks.Namespace", &mut check.namespace)?,
                _ => return Err(format!("json: unknown field {name:?}")),
            }
        }
        checks.push(check);
    }
    Ok(Some(checks))
}

/// Decodes a session-create body onto Consul's defaults, as Go's case-insensitive,
/// unknown-field-rejecting JSON decoder does.
fn decode_session(body: &[u8], spec: &mut SessionSpec) -> Result<(), String> {
    let value = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
        .unwrap_or_else(|| Err(serde::de::Error::custom("EOF")))
        .map_err(|e| e.to_string())?;
    let fields = match value {
        Value::Null => return Ok(()),
        Value::Object(fields) => fields,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type structs.Session",
                match other {
                    Value::Array(_) => "array",
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    _ => "bool",
                }
            ))
        }
    };
    for (name, v) in &fields {
        match name.to_ascii_lowercase().as_str() {
            "id" => decode_string(v, "ID", &mut String::new())?,
            "name" => decode_string(v, "Name", &mut spec.name)?,
            "node" => decode_string(v, "Node", &mut spec.node)?,
            "behavior" => decode_string(v, "Behavior", &mut spec.behavior)?,
            "ttl" => decode_string(v, "TTL", &mut spec.ttl)?,
            "lockdelay" => {
                if let Some(ns) = decode_lock_delay(v)? {
                    spec.lock_delay_ns = ns;
                }
            }
            "nodechecks" => spec.node_checks = decode_strings(v, "NodeChecks")?,
            "checks" => spec.checks = decode_strings(v, "Checks")?,
            "servicechecks" => spec.service_checks = decode_service_checks(v)?,
            "createindex" | "modifyindex" => match v {
                Value::Null | Value::Number(_) => {}
                other => return Err(type_error(other, name, "uint64")),
            },
            _ => return Err(format!("json: unknown field {name:?}")),
        }
    }
    Ok(())
}

/// Consul's `fixupEmptySessionChecks` (backwards compatibility of `Checks`).
fn fixup_session_checks(spec: &mut SessionSpec) {
    if spec.checks.is_empty() {
        spec.node_checks = Vec::new();
    } else if (spec.checks.len() == 1 && spec.checks[0] == SERF_CHECK_ID)
        || spec.node_checks.is_empty()
    {
        // Only the default check: defer to NodeChecks. No NodeChecks: drop Checks too.
        spec.checks = Vec::new();
    }
}

async fn session_create(shared: &Arc<Shared>, req: Request<Incoming>, token: &str) -> Resp {
    let mut spec = SessionSpec {
        name: String::new(),
        node: shared.options().node_name.clone(),
        lock_delay_ns: DEFAULT_LOCK_DELAY.as_nanos() as i64,
        behavior: "release".to_string(),
        ttl: String::new(),
        node_checks: vec![SERF_CHECK_ID.to_string()],
        service_checks: None,
        checks: vec![SERF_CHECK_ID.to_string()],
    };
    let body = match read_body(req, shared.options().max_value_size).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    if !body.is_empty() {
        if let Err(e) = decode_session(&body, &mut spec) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    }
    fixup_session_checks(&mut spec);
    match authorize(shared, token) {
        Ok(Access::All) => {}
        Ok(Access::Anonymous) => return permission_denied("session:write", &spec.node),
        Err(resp) => return *resp,
    }
    match shared.write(|st, now| st.session_create(spec, now)) {
        Ok(id) => json(&serde_json::json!({ "ID": id })),
        Err(e) => rpc_error(e.0),
    }
}

fn session_destroy(shared: &Arc<Shared>, id: &str, token: &str) -> Resp {
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing session");
    }
    match authorize(shared, token) {
        Ok(Access::All) => {}
        Ok(Access::Anonymous) => {
            let node = shared.options().node_name.clone();
            return permission_denied("session:write", &node);
        }
        Err(resp) => return *resp,
    }
    shared.write(|st, now| st.session_destroy(id, now));
    json(&true)
}

fn session_renew(shared: &Arc<Shared>, id: &str, query: &Query, token: &str) -> Resp {
    if let Err(resp) = parse_read_options(query) {
        return *resp;
    }
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing session");
    }
    let access = match authorize(shared, token) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    // Renewal resets a timer; it is not a Raft write.
    let renewed = {
        let mut st = shared.read();
        if access == Access::Anonymous {
            st.session_get(id).1
        } else {
            st.session_renew(id, Instant::now())
        }
    };
    match renewed {
        None => text(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        ),
        Some(session) if access == Access::Anonymous => {
            permission_denied("session:write", &session.node)
        }
        Some(session) => sessions_json(std::slice::from_ref(&session)),
    }
}

#[derive(Clone, Copy)]
enum SessionRead<'a> {
    Info(&'a str),
    List,
    Node(&'a str),
}

async fn session_read(
    shared: &Arc<Shared>,
    what: SessionRead<'_>,
    query: &Query,
    token: &str,
) -> Resp {
    let opts = match parse_read_options(query) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    match what {
        SessionRead::Info("") => return text(StatusCode::BAD_REQUEST, "Missing session"),
        SessionRead::Node("") => return text(StatusCode::BAD_REQUEST, "Missing node name"),
        _ => {}
    }
    let access = match authorize(shared, token) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let watch = match what {
        SessionRead::Info(id) => Watch::Session(id.to_string()),
        SessionRead::List | SessionRead::Node(_) => Watch::AllSessions,
    };
    let (index, mut sessions) = blocking_query(
        shared.store(),
        shared.changes(),
        opts.min_index,
        read_wait(shared, &opts),
        &watch,
        |st| match what {
            SessionRead::Info(id) => {
                let (idx, s) = st.session_get(id);
                (idx, s.into_iter().collect::<Vec<_>>())
            }
            SessionRead::List => st.session_list(),
            SessionRead::Node(node) => st.node_sessions(node),
        },
    )
    .await;
    if access == Access::Anonymous {
        sessions.clear();
    }
    with_meta(sessions_json(&sessions), index, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SessionSpec {
        SessionSpec {
            name: String::new(),
            node: "n".into(),
            lock_delay_ns: 15_000_000_000,
            behavior: "release".into(),
            ttl: String::new(),
            node_checks: vec![SERF_CHECK_ID.into()],
            service_checks: None,
            checks: vec![SERF_CHECK_ID.into()],
        }
    }

    #[test]
    fn lock_delay_forms() {
        let mut s = defaults();
        decode_session(br#"{"LockDelay":"15000ms"}"#, &mut s).unwrap();
        assert_eq!(s.lock_delay_ns, 15_000_000_000);
        decode_session(br#"{"lockdelay":5}"#, &mut s).unwrap();
        assert_eq!(s.lock_delay_ns, 5_000_000_000, "small numbers are seconds");
        decode_session(br#"{"LockDelay":2000000000}"#, &mut s).unwrap();
        assert_eq!(s.lock_delay_ns, 2_000_000_000);
        decode_session(br#"{"LockDelay":"0s"}"#, &mut s).unwrap();
        assert_eq!(s.lock_delay_ns, 0);
        assert!(decode_session(br#"{"LockDelay":"soon"}"#, &mut s).is_err());
    }

    #[test]
    fn session_body_is_strict_and_case_insensitive() {
        let mut s = defaults();
        decode_session(br#"{"name":"x","TTL":"10s","behavior":"delete"}"#, &mut s).unwrap();
        assert_eq!((s.name.as_str(), s.ttl.as_str()), ("x", "10s"));
        assert_eq!(s.behavior, "delete");
        assert_eq!(
            decode_session(br#"{"Bogus":1}"#, &mut s),
            Err("json: unknown field \"Bogus\"".to_string())
        );
        assert!(decode_session(br#"{"TTL":10}"#, &mut s).is_err());
        assert!(decode_session(b"not json", &mut s).is_err());
        assert!(decode_session(b"null", &mut s).is_ok());
    }

    #[test]
    fn checks_fixup_follows_consul() {
        let mut s = defaults();
        fixup_session_checks(&mut s);
        assert_eq!(s.node_checks, vec![SERF_CHECK_ID.to_string()]);
        assert!(s.checks.is_empty());

        let mut s = defaults();
        decode_session(br#"{"Checks":[]}"#, &mut s).unwrap();
        fixup_session_checks(&mut s);
        assert!(s.node_checks.is_empty() && s.checks.is_empty());

        let mut s = defaults();
        decode_session(br#"{"Checks":["a"],"NodeChecks":[]}"#, &mut s).unwrap();
        fixup_session_checks(&mut s);
        assert!(s.node_checks.is_empty() && s.checks.is_empty());
    }

    #[test]
    fn go_uint_texts() {
        assert_eq!(parse_go_uint("42"), Ok(42));
        assert_eq!(
            parse_go_uint("+1"),
            Err("strconv.ParseUint: parsing \"+1\": invalid syntax".to_string())
        );
        assert_eq!(
            parse_go_uint("18446744073709551616"),
            Err("strconv.ParseUint: parsing \"18446744073709551616\": value out of range".into())
        );
    }

    #[test]
    fn paths_decode() {
        assert_eq!(
            percent_decode("/v1/kv/a%2Fb%20c").as_deref(),
            Some("/v1/kv/a/b c")
        );
        assert_eq!(percent_decode("/v1/kv/%zz"), None);
        assert_eq!(percent_decode("/v1/kv/%4"), None);
    }
}
