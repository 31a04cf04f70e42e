//! A stand-in Kubernetes API server (axum) for the api's cluster status: list and watch of Flux
//! `kustomize.toolkit.fluxcd.io/v1` Kustomizations, `apps/v1` Deployments and `v1` Pods across
//! all namespaces, label-selected, as the real server answers them:
//!
//! - a list is `{"kind":"<Kind>List","metadata":{"resourceVersion"},"items":[…]}`;
//! - `?watch=true&resourceVersion=N` streams newline-delimited events
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}` of every change after N, then
//!   follows new ones; with `allowWatchBookmarks=true` a BOOKMARK carries the latest
//!   resourceVersion the stream has passed; `timeoutSeconds` ends the stream;
//! - after [`KubeApi::compact`], a watch from an older resourceVersion gets one ERROR event with a
//!   `Status` of code 410 (reason `Expired`), and a list at such a resourceVersion a 410 answer;
//! - [`KubeApi::drop_watches`] ends every open watch (a dropped connection);
//!   [`KubeApi::set_delay`] makes every answer slow; [`KubeApi::hold`] keeps requests waiting until
//!   [`KubeApi::release`].
//!
//! Objects are stored as the JSON of their typed values (k8s-openapi types, the api's Flux type),
//! so they have their real shapes. Limits: one resourceVersion counter for every kind (as etcd
//! has); no field selectors, no pagination (`limit` is ignored: everything comes in one page, with
//! no `continue`), no `resourceVersionMatch`, no streaming lists (`sendInitialEvents`); a label
//! change that moves an object out of a selector is not sent as DELETED to that selector's
//! watchers; no create/update/patch (the api only reads), no Leases; no authentication.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

/// The kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Kustomization,
    Deployment,
    Pod,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Kustomization => "kustomize.toolkit.fluxcd.io/v1",
            Kind::Deployment => "apps/v1",
            Kind::Pod => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Kustomization => "Kustomization",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
        }
    }

    fn of(object: &Value) -> Kind {
        match (object["apiVersion"].as_str(), object["kind"].as_str()) {
            (Some("kustomize.toolkit.fluxcd.io/v1"), Some("Kustomization")) => Kind::Kustomization,
            (Some("apps/v1"), Some("Deployment")) => Kind::Deployment,
            (Some("v1"), Some("Pod")) => Kind::Pod,
            other => panic!("the stand-in does not serve {other:?}"),
        }
    }
}

#[derive(Clone)]
struct Event {
    rv: u64,
    kind: Kind,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct World {
    rv: u64,
    /// Events at or below this resourceVersion are gone (410 for a watch from before it).
    floor: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    log: Vec<Event>,
}

struct Inner {
    world: Mutex<World>,
    events: broadcast::Sender<Event>,
    drops: watch::Sender<u64>,
    delay_ms: AtomicU64,
    /// While true, every request waits (recorded, unanswered) until [`KubeApi::release`].
    held: watch::Sender<bool>,
    bookmark_ms: AtomicU64,
    requests: Mutex<Vec<String>>,
}

/// A running stand-in.
pub struct KubeApi {
    /// `http://127.0.0.1:<port>`, for `cluster.url`.
    pub url: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let (events, _) = broadcast::channel(4096);
        let (drops, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            world: Mutex::new(World::default()),
            events,
            drops,
            delay_ms: AtomicU64::new(0),
            held: watch::channel(false).0,
            bookmark_ms: AtomicU64::new(1000),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations",
                get(kustomizations),
            )
            .route("/apis/apps/v1/deployments", get(deployments))
            .route("/api/v1/pods", get(pods))
            .fallback(|| async {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the stand-in serves no such path",
                )
            })
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KubeApi { url, inner, server }
    }

    /// Creates or replaces an object (any served kind, as its typed value): ADDED or MODIFIED.
    pub fn put(&self, object: &impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap();
        let kind = Kind::of(&object);
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let mut world = self.inner.world.lock().unwrap();
        world.rv += 1;
        let rv = world.rv;
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{ns}-{name}-{rv}")));
        let key = (kind, ns, name);
        let type_ = if world.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        world.objects.insert(key, object.clone());
        let event = Event {
            rv,
            kind,
            type_,
            object,
        };
        world.log.push(event.clone());
        let _ = self.inner.events.send(event);
    }

    /// Deletes an object: DELETED with its last state. False when there was none.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut world = self.inner.world.lock().unwrap();
        let Some(mut object) = world.objects.remove(&(kind, namespace.into(), name.into())) else {
            return false;
        };
        world.rv += 1;
        let rv = world.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event {
            rv,
            kind,
            type_: "DELETED",
            object,
        };
        world.log.push(event.clone());
        let _ = self.inner.events.send(event);
        true
    }

    /// Forgets every event so far (as etcd compaction does): a watch or list from an older
    /// resourceVersion answers 410 Gone.
    pub fn compact(&self) {
        let mut world = self.inner.world.lock().unwrap();
        world.floor = world.rv;
        world.log.clear();
    }

    /// Ends every open watch stream, as a dropped connection or an API server restart does.
    pub fn drop_watches(&self) {
        self.inner.drops.send_modify(|n| *n += 1);
    }

    /// Requests from now on wait, unanswered, until [`KubeApi::release`]: a test can change the
    /// world while a client is reconnecting, whatever the machine's speed.
    pub fn hold(&self) {
        self.inner.held.send_replace(true);
    }

    /// Answers the requests [`KubeApi::hold`] kept waiting, against the world as it is now.
    pub fn release(&self) {
        self.inner.held.send_replace(false);
    }

    /// Every answer waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// How often a watch with bookmarks gets one.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.inner
            .bookmark_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.world.lock().unwrap().rv
    }

    /// Every request so far, as `<path>?<query>` (query keys sorted).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().unwrap().clone()
    }
}

async fn kustomizations(
    state: State<Arc<Inner>>,
    query: Query<HashMap<String, String>>,
) -> Response {
    serve(
        state,
        query,
        Kind::Kustomization,
        "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations",
    )
    .await
}

async fn deployments(state: State<Arc<Inner>>, query: Query<HashMap<String, String>>) -> Response {
    serve(state, query, Kind::Deployment, "/apis/apps/v1/deployments").await
}

async fn pods(state: State<Arc<Inner>>, query: Query<HashMap<String, String>>) -> Response {
    serve(state, query, Kind::Pod, "/api/v1/pods").await
}

async fn serve(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    kind: Kind,
    path: &str,
) -> Response {
    // Which connections a drop ends is decided by when the request arrived: one that arrived
    // before [`KubeApi::drop_watches`] is ended even if its stream starts after it.
    let generation = *inner.drops.borrow();
    let sorted: BTreeMap<_, _> = query.iter().collect();
    let shown: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    inner
        .requests
        .lock()
        .unwrap()
        .push(format!("{path}?{}", shown.join("&")));
    let mut held = inner.held.subscribe();
    // The sender lives as long as `inner`, so waiting ends only on release.
    let _ = held.wait_for(|held| !held).await;
    let delay = inner.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let selector =
        match Selector::parse(query.get("labelSelector").map(String::as_str).unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
        };
    let rv = match query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("")
    {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {text:?}"),
                )
            }
        },
    };
    if query.get("watch").map(String::as_str) == Some("true")
        || query.get("watch").map(String::as_str) == Some("1")
    {
        let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok());
        return watch_stream(inner, kind, selector, rv, bookmarks, timeout, generation);
    }
    let world = inner.world.lock().unwrap();
    if let Some(rv) = rv.filter(|rv| *rv != 0 && *rv < world.floor) {
        return gone(rv, world.floor);
    }
    let items: Vec<&Value> = world
        .objects
        .iter()
        .filter(|((k, _, _), o)| *k == kind && selector.matches(o))
        .map(|(_, o)| o)
        .collect();
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.name()),
        "metadata": {"resourceVersion": world.rv.to_string()},
        "items": items,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn watch_stream(
    inner: Arc<Inner>,
    kind: Kind,
    selector: Selector,
    from: Option<u64>,
    bookmarks: bool,
    timeout: Option<u64>,
    generation: u64,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    // Subscribe under the lock, so no event falls between the backlog and the live feed.
    let (backlog, mut live, mut seen) = {
        let world = inner.world.lock().unwrap();
        let live = inner.events.subscribe();
        match from {
            Some(rv) if rv != 0 && rv < world.floor => {
                let line = line("ERROR", gone_status(rv, world.floor));
                drop(world);
                let _ = tx.try_send(line);
                return stream_response(rx);
            }
            // No resourceVersion (or 0): the current state as ADDED events, then what follows.
            None | Some(0) => {
                let backlog: Vec<Bytes> = world
                    .objects
                    .iter()
                    .filter(|((k, _, _), o)| *k == kind && selector.matches(o))
                    .map(|(_, o)| line("ADDED", o.clone()))
                    .collect();
                (backlog, live, world.rv)
            }
            Some(rv) => {
                let backlog = world
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && e.kind == kind && selector.matches(&e.object))
                    .map(|e| line(e.type_, e.object.clone()))
                    .collect();
                (backlog, live, world.rv.max(rv))
            }
        }
    };
    let mut drops = inner.drops.subscribe();
    if *drops.borrow_and_update() != generation {
        // Dropped while it was being set up: it ends at once, as a dropped connection does.
        drop(tx);
        return stream_response(rx);
    }
    let bookmark_every = Duration::from_millis(inner.bookmark_ms.load(Ordering::Relaxed));
    tokio::spawn(async move {
        for l in backlog {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout.unwrap_or(3600)));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            tokio::select! {
                // A drop wins over events already queued: a dropped connection delivers nothing
                // that happened after it.
                biased;
                _ = drops.changed() => return,
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let object = json!({"apiVersion": kind.api_version(), "kind": kind.name(),
                        "metadata": {"resourceVersion": seen.to_string()}});
                    if tx.send(line("BOOKMARK", object)).await.is_err() {
                        return;
                    }
                }
                event = live.recv() => match event {
                    Ok(event) => {
                        if event.rv <= seen {
                            continue;
                        }
                        seen = event.rv;
                        if event.kind == kind && selector.matches(&event.object)
                            && tx.send(line(event.type_, event.object)).await.is_err() {
                            return;
                        }
                    }
                    // Too far behind: end the stream; the client resumes from its resourceVersion.
                    Err(_) => return,
                },
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn line(type_: &str, object: Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

fn gone_status(rv: u64, floor: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({floor})"), "reason": "Expired", "code": 410})
}

fn gone(rv: u64, floor: u64) -> Response {
    (StatusCode::GONE, axum::Json(gone_status(rv, floor))).into_response()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

/// Equality-based label selectors: `k`, `!k`, `k=v`, `k==v`, `k!=v`, comma-separated.
#[derive(Debug, Clone, Default)]
struct Selector(Vec<(String, Requirement)>);

#[derive(Debug, Clone)]
enum Requirement {
    Exists,
    Absent,
    Equals(String),
    Differs(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, req) = if let Some((k, v)) = part.split_once("!=") {
                (k, Requirement::Differs(v.into()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k, Requirement::Equals(v.into()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k, Requirement::Equals(v.into()))
            } else if let Some(k) = part.strip_prefix('!') {
                (k, Requirement::Absent)
            } else {
                (part, Requirement::Exists)
            };
            let valid = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            };
            if key.is_empty() || !valid(key) || part.contains(' ') || part.contains(" in ") {
                return Err(format!("unable to parse requirement: {part:?}"));
            }
            if let Requirement::Equals(v) | Requirement::Differs(v) = &req {
                if !valid(v) {
                    return Err(format!("invalid label value in {part:?}"));
                }
            }
            out.push((key.to_owned(), req));
        }
        Ok(Selector(out))
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|(key, req)| {
            let value = labels.get(key).and_then(Value::as_str);
            match req {
                Requirement::Exists => value.is_some(),
                Requirement::Absent => value.is_none(),
                Requirement::Equals(v) => value == Some(v.as_str()),
                Requirement::Differs(v) => value != Some(v.as_str()),
            }
        })
    }
}
