//! Hearing back from the cluster: the api's watchers against the stand-in Kubernetes API
//! (`e2e::kube_api`), driving each pipeline transition (committed → applied → running) and each
//! health reason, a 410 Gone and a dropped watch recovered, slow answers, another customer's
//! status (404), and no cluster at all ("no cluster connected").

use std::time::{Duration, Instant};

use api::cluster::flux::Kustomization;
use api::config::{ClusterConfig, ClusterMode};
use e2e::kube_api::{Kind, KubeApi};
use e2e::{bot_token, Backend, Options, Platform, Session};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const T0: &str = "2026-01-01T00:00:00Z";

async fn platform_with(kube: Option<&KubeApi>, unhealthy_after_seconds: u64) -> Platform {
    let mut cluster = ClusterConfig {
        unhealthy_after_seconds,
        sweep_interval_seconds: 1,
        ..ClusterConfig::default()
    };
    if let Some(kube) = kube {
        cluster.mode = ClusterMode::Url;
        cluster.url = Some(kube.url.clone());
    }
    let options = Options {
        cluster,
        ..Options::default()
    };
    Platform::start(Backend::Sqlite, options)
        .await
        .expect("sqlite platform")
}

/// Provisions `name` as an admin; returns its commit.
async fn provision(p: &Platform, name: &str) -> String {
    let (status, body, _) = p.provision(name).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["commit"].as_str().unwrap().to_owned()
}

async fn status_of(p: &Platform, name: &str) -> Value {
    let (status, body) = p
        .call(
            Method::GET,
            &format!("/v1/tenants/{name}/status"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls the status until `done` holds (the watch is asynchronous); panics after 15 s.
async fn status_until(p: &Platform, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let body = status_of(p, name).await;
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "status never reached the wanted state: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase(body: &Value) -> &str {
    body["pipeline"]["phase"].as_str().unwrap_or("-")
}

fn codes(body: &Value) -> Vec<String> {
    body["pipeline"]["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["code"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn kustomization(
    name: &str,
    ready: &str,
    reason: &str,
    message: &str,
    origin: Option<&str>,
) -> Kustomization {
    let mut status = json!({
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
            "lastTransitionTime": T0, "observedGeneration": 1}],
        "lastAppliedRevision": "latest@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "observedGeneration": 1,
    });
    if let Some(commit) = origin {
        status["lastAppliedOriginRevision"] = json!(format!("main@sha1:{commit}"));
        status["lastAttemptedRevision"] = json!(format!("main@sha1:{commit}"));
    }
    serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": format!("tenant-{name}"), "namespace": "flux-system", "generation": 1,
            "labels": {"openclaw.cloud/tenant": name, "sharding.fluxcd.io/key": "shard-1"}},
        "spec": {"interval": "10m", "path": format!("./{name}"), "prune": true,
            "sourceRef": {"kind": "ExternalArtifact", "name": "tenants-00"}},
        "status": status,
    }))
    .unwrap()
}

fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": "openclaw-gateway", "openclaw.cloud/tenant": name})
}

/// The gateway Deployment: `available` or not, with extra status conditions.
fn deployment(name: &str, replicas: i32, available: bool, extra: Vec<Value>) -> Deployment {
    let mut conditions = vec![
        json!({"type": "Available", "status": if available { "True" } else { "False" },
        "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
        "message": "Deployment availability", "lastTransitionTime": T0, "lastUpdateTime": T0}),
    ];
    conditions.extend(extra);
    let n = if available { replicas } else { 0 };
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "openclaw-gateway", "namespace": format!("customer-{name}"), "generation": 2, "labels": labels(name)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels(name)}, "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels(name)}, "spec": {"containers": [{"name": "gateway", "image": "ghcr.io/openclaw/openclaw:1"}]}}},
        "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": n, "availableReplicas": n, "conditions": conditions},
    }))
    .unwrap()
}

/// A gateway pod, ready or not, with container `state`/`lastState` and pod conditions.
fn pod(
    name: &str,
    ready: bool,
    phase: &str,
    state: Value,
    last_state: Value,
    extra: Vec<Value>,
) -> Pod {
    let mut conditions = vec![
        json!({"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": T0}),
    ];
    conditions.extend(extra);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "openclaw-gateway-7d9f8-abcde", "namespace": format!("customer-{name}"), "labels": labels(name)},
        "spec": {"containers": [{"name": "gateway", "image": "ghcr.io/openclaw/openclaw:1"}]},
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": [{
            "name": "gateway", "image": "ghcr.io/openclaw/openclaw:1", "imageID": "", "ready": ready,
            "restartCount": 4, "state": state, "lastState": last_state}]},
    }))
    .unwrap()
}

fn running_state() -> Value {
    json!({"running": {"startedAt": T0}})
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"waiting": {"reason": reason, "message": message}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_goes_committed_applied_running_through_the_watch() {
    let kube = KubeApi::start().await;
    let p = platform_with(Some(&kube), 3600).await;
    let c1 = provision(&p, "acme").await;

    let body = status_until(&p, "acme", |b| b["connected"] == json!(true)).await;
    assert_eq!(body["cluster"], "connected");
    assert_eq!(body["committed"], c1.as_str());
    assert_eq!(phase(&body), "committed");
    assert_eq!(body["pipeline"]["health"], "progressing", "{body}");

    // Flux reconciles, but an older revision than ours: still committed.
    let older = "1111111111111111111111111111111111111111";
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(older),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(phase(&status_of(&p, "acme").await), "committed");

    // Ready at our commit: applied.
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    let body = status_until(&p, "acme", |b| phase(b) == "applied").await;
    assert_eq!(body["pipeline"]["appliedCommit"], c1.as_str());

    // Deployment available and pod ready: running, healthy.
    kube.put(&deployment("acme", 1, true, vec![]));
    kube.put(&pod(
        "acme",
        true,
        "Running",
        running_state(),
        json!({}),
        vec![],
    ));
    let body = status_until(&p, "acme", |b| phase(b) == "running").await;
    assert_eq!(body["pipeline"]["health"], "healthy");
    assert_eq!(body["pipeline"]["readyPods"], 1);
    assert!(body["pipeline"]["notRunningSince"].is_null());

    // A later commit (another tenant's) descends from ours: a revision at it still contains ours.
    let c2 = provision(&p, "globex").await;
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c2),
    ));
    let body = status_until(&p, "acme", |b| b["pipeline"]["appliedCommit"] == json!(c2)).await;
    assert_eq!(phase(&body), "running", "{body}");

    // Suspending commits again: back to committed until Flux applies it; then suspended.
    let (status, body) = p
        .call(
            Method::POST,
            "/v1/tenants/acme/suspend",
            Some(json!({"reason": "test"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c3 = body["commit"].as_str().unwrap().to_owned();
    let body = status_until(&p, "acme", |b| b["committed"] == json!(c3)).await;
    assert_eq!(phase(&body), "committed");
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c3),
    ));
    kube.put(&deployment("acme", 0, false, vec![]));
    assert!(kube.delete(Kind::Pod, "customer-acme", "openclaw-gateway-7d9f8-abcde"));
    let body = status_until(&p, "acme", |b| {
        b["pipeline"]["health"] == json!("suspended")
    })
    .await;
    assert_eq!(phase(&body), "applied");

    // The admin view lists globex (never applied), not the suspended acme; the gauges count them.
    let (status, body) = p
        .call(Method::GET, "/v1/admin/tenants/not-running", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["globex"], "{body}");
    let started = Instant::now();
    loop {
        let metrics = p
            .http
            .get(format!("{}/metrics", p.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The exposition format orders labels by name.
        if metrics.contains(r#"api_cluster_tenants{health="suspended",phase="applied"} 1"#)
            && metrics.contains(r#"api_cluster_tenants{health="progressing",phase="committed"} 1"#)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gauges never counted the tenants:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_health_reason_shows_with_the_clusters_message() {
    let kube = KubeApi::start().await;
    let p = platform_with(Some(&kube), 3600).await;
    let c1 = provision(&p, "acme").await;
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    status_until(&p, "acme", |b| phase(b) == "applied").await;

    let cases: Vec<(&str, Deployment, Option<Pod>)> = vec![
        (
            "CrashLoopBackOff",
            deployment("acme", 1, false, vec![]),
            Some(pod(
                "acme",
                false,
                "Running",
                waiting(
                    "CrashLoopBackOff",
                    "back-off 5m0s restarting failed container",
                ),
                json!({}),
                vec![],
            )),
        ),
        (
            "OOMKilled",
            deployment("acme", 1, false, vec![]),
            Some(pod(
                "acme",
                false,
                "Running",
                waiting("CrashLoopBackOff", "back-off"),
                json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": T0, "finishedAt": T0}}),
                vec![],
            )),
        ),
        (
            "ImagePullBackOff",
            deployment("acme", 1, false, vec![]),
            Some(pod(
                "acme",
                false,
                "Pending",
                waiting("ImagePullBackOff", "Back-off pulling image"),
                json!({}),
                vec![],
            )),
        ),
        (
            "ErrImagePull",
            deployment("acme", 1, false, vec![]),
            Some(pod(
                "acme",
                false,
                "Pending",
                waiting("ErrImagePull", "manifest unknown"),
                json!({}),
                vec![],
            )),
        ),
        (
            "PendingOnQuota",
            deployment(
                "acme",
                1,
                false,
                vec![
                    json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "pods \"openclaw-gateway-7d9f8-x\" is forbidden: exceeded quota: tenant-quota, requested: requests.memory=1Gi",
            "lastTransitionTime": T0, "lastUpdateTime": T0}),
                ],
            ),
            None,
        ),
        (
            "Unschedulable",
            deployment("acme", 1, false, vec![]),
            Some(pod(
                "acme",
                false,
                "Pending",
                json!({"waiting": {"reason": "ContainerCreating"}}),
                json!({}),
                vec![
                    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.", "lastTransitionTime": T0}),
                ],
            )),
        ),
        (
            "ProgressDeadlineExceeded",
            deployment(
                "acme",
                1,
                false,
                vec![json!({"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing.", "lastTransitionTime": T0, "lastUpdateTime": T0})],
            ),
            None,
        ),
    ];
    for (code, d, pod) in cases {
        kube.put(&d);
        match pod {
            Some(pod) => kube.put(&pod),
            None => {
                kube.delete(Kind::Pod, "customer-acme", "openclaw-gateway-7d9f8-abcde");
            }
        }
        let body = status_until(&p, "acme", |b| {
            codes(b).first().map(String::as_str) == Some(code)
        })
        .await;
        assert_eq!(phase(&body), "applied", "{code}: {body}");
        assert_eq!(body["pipeline"]["health"], "failing", "{code}: {body}");
        let reason = &body["pipeline"]["reasons"][0];
        assert!(
            !reason["message"].as_str().unwrap().is_empty(),
            "{code}: {body}"
        );
        assert!(
            reason["object"]
                .as_str()
                .unwrap()
                .contains("customer-acme/"),
            "{code}: {body}"
        );
    }

    // Flux's failures: build and health check, with Flux's message.
    kube.put(&kustomization(
        "acme",
        "False",
        "BuildFailed",
        "kustomize build failed: accumulating resources: 'deployment.yaml' not found",
        Some(&c1),
    ));
    let body = status_until(&p, "acme", |b| {
        codes(b).contains(&"FluxBuildFailed".to_owned())
    })
    .await;
    assert_eq!(phase(&body), "committed", "{body}");
    assert!(
        body.to_string().contains("accumulating resources"),
        "{body}"
    );
    kube.put(&kustomization("acme", "False", "HealthCheckFailed",
        "health check failed after 5m0s: timeout waiting for: [Deployment/customer-acme/openclaw-gateway status: 'InProgress']", Some(&c1)));
    let body = status_until(&p, "acme", |b| {
        codes(b).contains(&"FluxHealthCheckFailed".to_owned())
    })
    .await;
    assert!(body.to_string().contains("timeout waiting for"), "{body}");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_not_running_past_the_limit_is_unhealthy_and_recovers() {
    let kube = KubeApi::start().await;
    // One second: our commit is older than that by the time the pod has crashed.
    let p = platform_with(Some(&kube), 1).await;
    let c1 = provision(&p, "acme").await;
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    kube.put(&deployment("acme", 1, false, vec![]));
    kube.put(&pod(
        "acme",
        false,
        "Running",
        waiting("CrashLoopBackOff", "back-off"),
        json!({}),
        vec![],
    ));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let body = status_until(&p, "acme", |b| {
        b["pipeline"]["health"] == json!("unhealthy")
    })
    .await;
    assert!(
        body["pipeline"]["notRunningSince"].as_i64().is_some(),
        "{body}"
    );
    assert_eq!(codes(&body), ["CrashLoopBackOff"]);
    kube.put(&deployment("acme", 1, true, vec![]));
    kube.put(&pod(
        "acme",
        true,
        "Running",
        running_state(),
        json!({}),
        vec![],
    ));
    let body = status_until(&p, "acme", |b| b["pipeline"]["health"] == json!("healthy")).await;
    assert_eq!(phase(&body), "running");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_watch_resumes_and_a_410_relists() {
    let kube = KubeApi::start().await;
    kube.set_bookmark_interval(Duration::from_millis(100));
    let p = platform_with(Some(&kube), 3600).await;
    let c1 = provision(&p, "acme").await;
    status_until(&p, "acme", |b| b["connected"] == json!(true)).await;
    let lists = |k: &KubeApi| {
        k.requests()
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    };
    let initial_lists = lists(&kube);
    assert_eq!(initial_lists, 3, "{:#?}", kube.requests());
    assert!(
        kube.requests().iter().all(|r| r.contains("labelSelector=")),
        "{:#?}",
        kube.requests()
    );

    // Dropped: the watcher resumes from its resourceVersion, without a new list.
    kube.drop_watches();
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    status_until(&p, "acme", |b| phase(b) == "applied").await;
    assert_eq!(lists(&kube), initial_lists, "{:#?}", kube.requests());

    // Expired: the watch comes back while history is compacted past it: 410, then a relist,
    // which brings what the lost events carried.
    kube.hold();
    kube.drop_watches();
    kube.put(&kustomization(
        "acme",
        "False",
        "BuildFailed",
        "kustomize build failed: lost event",
        Some(&c1),
    ));
    kube.put(&deployment("acme", 1, true, vec![]));
    kube.put(&pod(
        "acme",
        true,
        "Running",
        running_state(),
        json!({}),
        vec![],
    ));
    kube.compact();
    kube.release();
    let body = status_until(&p, "acme", |b| {
        codes(b).contains(&"FluxBuildFailed".to_owned())
    })
    .await;
    assert!(body.to_string().contains("lost event"), "{body}");
    assert!(
        lists(&kube) > initial_lists,
        "no relist after 410: {:#?}",
        kube.requests()
    );
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    let body = status_until(&p, "acme", |b| phase(b) == "running").await;
    assert_eq!(body["pipeline"]["health"], "healthy");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_answers_show_as_connecting_not_as_an_error() {
    let kube = KubeApi::start().await;
    kube.set_delay(Duration::from_secs(2));
    let p = platform_with(Some(&kube), 3600).await;
    provision(&p, "acme").await;
    let body = status_of(&p, "acme").await;
    assert_eq!(body["connected"], false, "{body}");
    assert!(
        body["cluster"].as_str().unwrap().starts_with("connecting"),
        "{body}"
    );
    assert!(body["pipeline"].is_null());
    kube.set_delay(Duration::ZERO);
    status_until(&p, "acme", |b| b["connected"] == json!(true)).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_cluster_every_answer_says_no_cluster_connected() {
    let p = platform_with(None, 600).await;
    let commit = provision(&p, "acme").await;
    let body = status_of(&p, "acme").await;
    assert_eq!(body["connected"], false);
    assert_eq!(body["cluster"], "no cluster connected");
    assert_eq!(body["committed"], commit.as_str());
    assert!(body["pipeline"].is_null());
    let (status, body) = p
        .call(Method::GET, "/v1/admin/tenants/not-running", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cluster"], "no cluster connected");
    assert_eq!(body["tenants"], json!([]));
    p.finish().await;
}

async fn customer_with_tenant(p: &Platform, id: i64, name: &str) -> Session {
    let session = p.login(id, "Ada").await;
    let token = bot_token(id as u64);
    p.accept_token(&token);
    let body = json!({"name": name, "owner": {"email": format!("{name}-{id}@example.com")}, "tier": "starter", "telegramBotToken": token});
    let (status, body) = p
        .call_as(
            Some(&session.access),
            Method::POST,
            "/v1/tenants",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_customers_status_is_404_like_a_missing_tenant() {
    let kube = KubeApi::start().await;
    let p = platform_with(Some(&kube), 3600).await;
    let ada = customer_with_tenant(&p, 1001, "acme").await;
    let eve = customer_with_tenant(&p, 1002, "evil").await;
    let (status, _) = p
        .call_as(
            Some(&ada.access),
            Method::GET,
            "/v1/tenants/acme/status",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, theirs) = p
        .call_as(
            Some(&eve.access),
            Method::GET,
            "/v1/tenants/acme/status",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let (status, missing) = p
        .call_as(
            Some(&eve.access),
            Method::GET,
            "/v1/tenants/nosuch/status",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .map(|m| m.replace("acme", "X")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace("nosuch", "X"))
    );
    let (status, _) = p
        .call_as(None, Method::GET, "/v1/tenants/acme/status", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = p
        .call_as(
            Some(&eve.access),
            Method::GET,
            "/v1/tenants/Bad%0Aname/status",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Customers do not get the admin view.
    let (status, _) = p
        .call_as(
            Some(&eve.access),
            Method::GET,
            "/v1/admin/tenants/not-running",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_messages_lose_control_characters_and_length() {
    let kube = KubeApi::start().await;
    let p = platform_with(Some(&kube), 3600).await;
    let c1 = provision(&p, "acme").await;
    let hostile = format!(
        "\u{1b}[31mfake\r\nLevel: admin\u{202e}{}",
        "x".repeat(100_000)
    );
    kube.put(&kustomization(
        "acme",
        "False",
        "BuildFailed",
        &hostile,
        Some(&c1),
    ));
    let body = status_until(&p, "acme", |b| !codes(b).is_empty()).await;
    let message = body["pipeline"]["reasons"][0]["message"].as_str().unwrap();
    assert!(
        !message.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{message:?}"
    );
    assert!(message.chars().count() <= api::cluster::pipeline::MAX_MESSAGE_CHARS + 1);
    // Objects of a namespace that is not the tenant's do not count for it.
    let mut stray = pod("acme", true, "Running", running_state(), json!({}), vec![]);
    stray.metadata.namespace = Some("customer-other".into());
    kube.put(&stray);
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    let body = status_until(&p, "acme", |b| phase(b) == "applied").await;
    assert_eq!(body["pipeline"]["readyPods"], 0, "{body}");
    p.finish().await;
}

/// A Flux generic-hmac Receiver stand-in: records each call whose signature checks.
struct ReceiverStandIn {
    url: String,
    hits: tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)>,
    _server: tokio::task::JoinHandle<()>,
}

async fn receiver_stand_in(token: &'static str) -> ReceiverStandIn {
    use axum::http::{HeaderMap, StatusCode as Code};
    let (tx, hits) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook/{digest}",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let sent = headers
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if sent != api::cluster::receiver::signature(token, &body) {
                    return Code::UNAUTHORIZED;
                }
                let _ = tx.send((
                    Instant::now(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
                Code::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/8f14e45fceea167a5a36dedd4bea2543",
        listener.local_addr().unwrap()
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    ReceiverStandIn {
        url,
        hits,
        _server: server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_push_tells_flux_at_once_through_its_receiver() {
    const TOKEN: &str = "receiver-token-0123456789abcdef";
    let mut receiver = receiver_stand_in(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("receiver-token"), format!("{TOKEN}\n")).unwrap();
    let options = Options {
        cluster: ClusterConfig {
            receiver_url: Some(receiver.url.clone()),
            receiver_token_path: Some(dir.path().join("receiver-token")),
            ..ClusterConfig::default()
        },
        ..Options::default()
    };
    let p = Platform::start(Backend::Sqlite, options).await.unwrap();
    let mut after_answer = Vec::new();
    let mut after_request = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        let commit = provision(&p, &format!("t{i}")).await;
        let answered = Instant::now();
        let (hit, body) = tokio::time::timeout(Duration::from_secs(5), receiver.hits.recv())
            .await
            .expect("the receiver was called within 5 s")
            .unwrap();
        assert_eq!(body["commit"], commit.as_str(), "{body}");
        after_request.push(hit.duration_since(sent));
        after_answer.push(hit.saturating_duration_since(answered));
    }
    after_request.sort();
    after_answer.sort();
    println!(
        "push -> flux notified: request sent -> receiver called p50 {:?} max {:?}; answer -> receiver called p50 {:?} max {:?}",
        after_request[10], after_request[19], after_answer[10], after_answer[19]
    );
    assert!(
        after_answer[19] < Duration::from_secs(1),
        "{after_answer:?}"
    );
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_tenant_and_its_recovery_are_told_once_to_owner_and_admins() {
    use e2e::bot_api::BotApiStandIn;
    const OWNER: i64 = 4242; // Platform::provision_body's owner
    const ADMIN: i64 = 777_001;
    let kube = KubeApi::start().await;
    let mut p = platform_with(Some(&kube), 1).await;
    let token = format!("888000:AAB{}", hex::encode(rand::random::<[u8; 16]>()));
    let bot = BotApiStandIn::start(&token).await;
    std::fs::write(
        p.dir.path().join("platform-bot-token"),
        format!("{token}\n"),
    )
    .unwrap();
    std::fs::write(
        p.dir.path().join("webhook-secret"),
        hex::encode(rand::random::<[u8; 24]>()),
    )
    .unwrap();
    p.config.bot = api::config::BotConfig {
        token_path: Some(p.dir.path().join("platform-bot-token")),
        webhook_secret_path: Some(p.dir.path().join("webhook-secret")),
        public_url: Some("https://api.example.test".into()),
        set_webhook: false,
        api_base_url: bot.url.clone(),
        timeout_seconds: 5,
    };
    p.config.auth.admin_telegram_ids = vec![ADMIN];
    p.config.check().unwrap();
    p.restart().await;

    let c1 = provision(&p, "acme").await;
    kube.put(&kustomization(
        "acme",
        "True",
        "ReconciliationSucceeded",
        "Applied",
        Some(&c1),
    ));
    kube.put(&deployment("acme", 1, false, vec![]));
    kube.put(&pod(
        "acme",
        false,
        "Running",
        waiting("CrashLoopBackOff", "back-off 10s"),
        json!({}),
        vec![],
    ));
    let told = |chat: i64, needle: &'static str| {
        let texts = bot.texts_to(chat);
        texts.iter().filter(|t| t.contains(needle)).count()
    };
    let started = Instant::now();
    while told(OWNER, "is not running") == 0 || told(ADMIN, "is unhealthy") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "owner {:?} admin {:?}",
            bot.texts_to(OWNER),
            bot.texts_to(ADMIN)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bot.texts_to(OWNER)
            .iter()
            .any(|t| t.contains("CrashLoopBackOff: back-off 10s")),
        "{:?}",
        bot.texts_to(OWNER)
    );
    kube.put(&deployment("acme", 1, true, vec![]));
    kube.put(&pod(
        "acme",
        true,
        "Running",
        running_state(),
        json!({}),
        vec![],
    ));
    let started = Instant::now();
    while told(OWNER, "running again") == 0 || told(ADMIN, "running again") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "owner {:?} admin {:?}",
            bot.texts_to(OWNER),
            bot.texts_to(ADMIN)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several sweeps later, each was told once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        told(OWNER, "is not running"),
        1,
        "{:?}",
        bot.texts_to(OWNER)
    );
    assert_eq!(told(ADMIN, "is unhealthy"), 1, "{:?}", bot.texts_to(ADMIN));
    assert_eq!(told(OWNER, "running again"), 1);
    assert_eq!(told(ADMIN, "running again"), 1);
    p.finish().await;
}
