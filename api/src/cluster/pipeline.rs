//! The per-tenant pipeline, a pure function: what the api committed, the tenant's Flux
//! Kustomization, its Deployment and its Pods in, a [`PipelineStatus`] out. No I/O, no clock
//! (the caller passes `now`), no git (the caller answers "does this revision contain our
//! commit?"), so every transition and every health reason is a unit test over objects.
//!
//! committed → applied: the Kustomization is Ready=True at a revision whose commit is ours or a
//! descendant of it (the origin revision of the shard's artifact, else the artifact's own
//! revision). applied → running: the Deployment is Available with its rollout complete and a
//! pod of it is Ready. A suspended tenant (its Deployment rendered with no replicas) is never
//! expected to run: once applied it stays there, with health `suspended`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use super::flux::{revision_commit, Kustomization};

/// The longest message kept from the cluster (a kustomize build error can run to pages).
pub const MAX_MESSAGE_CHARS: usize = 512;

/// How far the tenant's last change has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// In the state repo; Flux has not applied it yet.
    Committed,
    /// Flux applied it; the agent is not running it (yet).
    Applied,
    /// The agent's Deployment is available and its pod ready.
    Running,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Committed, Phase::Applied, Phase::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Committed => "committed",
            Phase::Applied => "applied",
            Phase::Running => "running",
        }
    }
}

/// Whether the tenant is as it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Running.
    Healthy,
    /// On its way, nothing wrong seen.
    Progressing,
    /// Something is wrong (see the reasons), for less than the configured time.
    Failing,
    /// Not running for longer than the configured time.
    Unhealthy,
    /// Suspended by its spec: applied and not expected to run.
    Suspended,
}

/// Why a tenant is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum ReasonCode {
    CrashLoopBackOff,
    #[serde(rename = "OOMKilled")]
    OomKilled,
    ImagePullBackOff,
    ErrImagePull,
    /// The ResourceQuota refused the pod (`FailedCreate` … `exceeded quota`).
    PendingOnQuota,
    /// The scheduler found no node for the pod.
    Unschedulable,
    /// The Deployment's rollout passed its progress deadline.
    ProgressDeadlineExceeded,
    /// kustomize-controller could not build or apply the tenant's folder.
    FluxBuildFailed,
    /// Applied, but the health check of the Deployment failed.
    FluxHealthCheckFailed,
    /// Another reconciliation failure (artifact, decryption, dependency…).
    FluxReconciliationFailed,
    /// The Kustomization is suspended: Flux applies nothing.
    FluxSuspended,
}

/// One reason, with the cluster's message and the object it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: ReasonCode,
    /// The cluster's message, without control characters, at most [`MAX_MESSAGE_CHARS`].
    pub message: String,
    /// `Kind namespace/name`.
    pub object: String,
}

/// A tenant's pipeline as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    pub phase: Phase,
    pub health: Health,
    pub reasons: Vec<Reason>,
    /// Our last commit for the tenant.
    pub committed: Option<String>,
    /// The commit of the revision Flux applied last (None: nothing, or a revision naming no commit).
    pub applied_commit: Option<String>,
    /// Pods of the Deployment that are ready.
    pub ready_pods: u32,
    /// Since when (Unix seconds) the tenant has not been running; None when running or suspended.
    pub not_running_since: Option<i64>,
}

/// Our last commit for the tenant and its time (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub commit: String,
    pub at: i64,
}

/// Everything the pipeline reads for one tenant.
pub struct Inputs<'a> {
    pub committed: Option<&'a Committed>,
    pub kustomization: Option<&'a Kustomization>,
    pub deployment: Option<&'a Deployment>,
    pub pods: &'a [&'a Pod],
    /// Unix seconds.
    pub now: i64,
    /// Not running for longer than this (seconds) is `unhealthy`.
    pub unhealthy_after: i64,
}

/// Does the applied commit (first) contain ours (second)? None: cannot tell (the commit is not
/// in the api's clone yet).
pub type Contains<'a> = &'a dyn Fn(&str, &str) -> Option<bool>;

/// The tenant's pipeline status.
pub fn evaluate(inputs: &Inputs<'_>, contains: Contains<'_>) -> PipelineStatus {
    let mut reasons = Vec::new();
    let applied_commit = inputs.kustomization.and_then(applied_commit);
    let ready = inputs.kustomization.and_then(|k| ready_condition(k));
    if let Some(k) = inputs.kustomization {
        flux_reasons(k, ready, &mut reasons);
    }
    let ready_true = ready.is_some_and(|c| c.status == "True");
    let contains_ours = match (inputs.committed, applied_commit.as_deref()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ours), Some(applied)) => {
            applied.eq_ignore_ascii_case(&ours.commit)
                || contains(applied, &ours.commit).unwrap_or(false)
        }
    };
    let applied = inputs.kustomization.is_some() && ready_true && contains_ours;
    let deployment_name = inputs.deployment.map(|d| object("Deployment", &d.metadata));
    let available = inputs.deployment.is_some_and(rollout_complete);
    if let Some(d) = inputs.deployment {
        deployment_reasons(
            d,
            deployment_name.as_deref().unwrap_or_default(),
            &mut reasons,
        );
    }
    let mut ready_pods = 0u32;
    for pod in inputs.pods {
        if pod.metadata.deletion_timestamp.is_none() && pod_ready(pod) {
            ready_pods += 1;
        }
        pod_reasons(pod, &mut reasons);
    }
    // A suspended tenant's Deployment is rendered with no replicas: nothing is to run.
    let expect_running = inputs
        .deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        != Some(0);
    let running = applied && expect_running && available && ready_pods > 0;
    let phase = if running {
        Phase::Running
    } else if applied {
        Phase::Applied
    } else {
        Phase::Committed
    };
    let committed_at = inputs.committed.map(|c| c.at);
    let (health, not_running_since) = if running {
        (Health::Healthy, None)
    } else if applied && !expect_running {
        (Health::Suspended, None)
    } else {
        // The clock starts at our commit, or later when the Deployment stopped being available.
        let stopped = inputs
            .deployment
            .and_then(|d| condition_since(d, "Available", "False"));
        let since = match (committed_at, stopped) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let overdue = since.is_some_and(|s| inputs.now - s > inputs.unhealthy_after);
        let health = if overdue {
            Health::Unhealthy
        } else if reasons.is_empty() {
            Health::Progressing
        } else {
            Health::Failing
        };
        (health, since)
    };
    PipelineStatus {
        phase,
        health,
        reasons,
        committed: inputs.committed.map(|c| c.commit.clone()),
        applied_commit,
        ready_pods,
        not_running_since,
    }
}

/// The commit of the revision Flux applied last: the origin revision of the artifact (the state
/// repo's commit the shard artifact was cut from), else the artifact's own revision.
pub fn applied_commit(k: &Kustomization) -> Option<String> {
    let status = k.status.as_ref()?;
    [
        status.last_applied_origin_revision.as_deref(),
        status.last_applied_revision.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(revision_commit)
    .map(|c| c.to_ascii_lowercase())
}

fn ready_condition(k: &Kustomization) -> Option<&Condition> {
    k.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn flux_reasons(k: &Kustomization, ready: Option<&Condition>, reasons: &mut Vec<Reason>) {
    let name = object("Kustomization", &k.metadata);
    if k.spec.suspend == Some(true) {
        reasons.push(Reason {
            code: ReasonCode::FluxSuspended,
            message: "the Kustomization is suspended: Flux applies nothing until it is resumed"
                .into(),
            object: name.clone(),
        });
    }
    let Some(ready) = ready.filter(|c| c.status == "False") else {
        return;
    };
    let code = match ready.reason.as_str() {
        "BuildFailed" => ReasonCode::FluxBuildFailed,
        "HealthCheckFailed" => ReasonCode::FluxHealthCheckFailed,
        // A reconciliation in flight is not a failure.
        "Progressing" | "ProgressingWithRetry" | "DependencyNotReady" => return,
        _ => ReasonCode::FluxReconciliationFailed,
    };
    reasons.push(Reason {
        code,
        message: clean(&ready.message),
        object: name,
    });
}

fn rollout_complete(d: &Deployment) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let available = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    observed
        && available
        && wanted > 0
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
}

fn deployment_reasons(d: &Deployment, name: &str, reasons: &mut Vec<Reason>) {
    for c in d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        let message = c.message.as_deref().unwrap_or_default();
        let reason = c.reason.as_deref().unwrap_or_default();
        let code = if c.type_ == "ReplicaFailure"
            && c.status == "True"
            && reason == "FailedCreate"
            && message.contains("exceeded quota")
        {
            ReasonCode::PendingOnQuota
        } else if c.type_ == "Progressing"
            && c.status == "False"
            && reason == "ProgressDeadlineExceeded"
        {
            ReasonCode::ProgressDeadlineExceeded
        } else {
            continue;
        };
        reasons.push(Reason {
            code,
            message: clean(message),
            object: name.to_owned(),
        });
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_reasons(pod: &Pod, reasons: &mut Vec<Reason>) {
    let Some(status) = &pod.status else {
        return;
    };
    let name = object("Pod", &pod.metadata);
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        reasons.push(Reason {
            code: ReasonCode::Unschedulable,
            message: clean(c.message.as_deref().unwrap_or_default()),
            object: name.clone(),
        });
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        if let Some(reason) = container_reason(c) {
            reasons.push(Reason {
                object: format!("{name} container {}", c.name),
                ..reason
            });
        }
    }
}

fn container_reason(c: &ContainerStatus) -> Option<Reason> {
    let killed = |t: Option<&k8s_openapi::api::core::v1::ContainerStateTerminated>| {
        t.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
    };
    let state = c.state.as_ref();
    let last = c.last_state.as_ref();
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting.and_then(|w| w.reason.as_deref());
    let message = clean(
        waiting
            .and_then(|w| w.message.as_deref())
            .unwrap_or_default(),
    );
    // OOMKilled is the cause a CrashLoopBackOff hides: name it first.
    if killed(state.and_then(|s| s.terminated.as_ref()))
        || killed(last.and_then(|s| s.terminated.as_ref()))
    {
        return Some(Reason {
            code: ReasonCode::OomKilled,
            message: format!(
                "the container ran out of memory and was killed ({} restarts)",
                c.restart_count
            ),
            object: String::new(),
        });
    }
    let code = match waiting_reason? {
        "CrashLoopBackOff" => ReasonCode::CrashLoopBackOff,
        "ImagePullBackOff" => ReasonCode::ImagePullBackOff,
        "ErrImagePull" => ReasonCode::ErrImagePull,
        _ => return None,
    };
    Some(Reason {
        code,
        message,
        object: String::new(),
    })
}

/// When `type_` last turned `status` (Unix seconds), if it is `status` now.
fn condition_since(d: &Deployment, type_: &str, status: &str) -> Option<i64> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.timestamp())
}

fn object(kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The cluster's text as we show it: control characters (line breaks too) become spaces, and it
/// stops at [`MAX_MESSAGE_CHARS`].
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if compiler::spec::refused_char(c) {
                ' '
            } else {
                c
            }
        })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OURS: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const LATER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const OLDER: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn kustomization(ready: &str, reason: &str, commit: &str) -> Kustomization {
        serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "tenant-acme", "namespace": "flux-system"},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "m\nx",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "lastAppliedOriginRevision": format!("main@sha1:{commit}")}
        }))
        .unwrap()
    }

    fn deployment(replicas: i32, available: bool) -> Deployment {
        let n = if available { replicas } else { 0 };
        serde_json::from_value(json!({
            "metadata": {"name": "openclaw-gateway", "namespace": "customer-acme", "generation": 1},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "updatedReplicas": replicas, "availableReplicas": n,
                "conditions": [{"type": "Available", "status": if available {"True"} else {"False"},
                    "lastTransitionTime": "2026-01-01T00:10:00Z"}]}
        }))
        .unwrap()
    }

    fn pod(ready: bool, state: serde_json::Value, last: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "customer-acme"},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "containerStatuses": [{"name": "gateway", "image": "i", "imageID": "", "ready": ready,
                    "restartCount": 3, "state": state, "lastState": last}]}
        }))
        .unwrap()
    }

    /// LATER descends from OURS; OLDER does not; anything else is unknown.
    fn ancestry(applied: &str, ours: &str) -> Option<bool> {
        match (applied, ours) {
            (LATER, OURS) => Some(true),
            (OLDER, OURS) => Some(false),
            _ => None,
        }
    }

    fn run(
        k: Option<&Kustomization>,
        d: Option<&Deployment>,
        pods: &[&Pod],
        now: i64,
    ) -> PipelineStatus {
        let committed = Committed {
            commit: OURS.into(),
            at: 1_767_225_600,
        }; // 2026-01-01T00:00:00Z
        evaluate(
            &Inputs {
                committed: Some(&committed),
                kustomization: k,
                deployment: d,
                pods,
                now,
                unhealthy_after: 600,
            },
            &ancestry,
        )
    }

    #[test]
    fn the_pipeline_moves_committed_applied_running() {
        let now = 1_767_225_700;
        let s = run(None, None, &[], now);
        assert_eq!((s.phase, s.health), (Phase::Committed, Health::Progressing));
        let older = kustomization("True", "ReconciliationSucceeded", OLDER);
        assert_eq!(run(Some(&older), None, &[], now).phase, Phase::Committed);
        let unknown = kustomization(
            "True",
            "ReconciliationSucceeded",
            "dddddddddddddddddddddddddddddddddddddddd",
        );
        assert_eq!(run(Some(&unknown), None, &[], now).phase, Phase::Committed);
        for commit in [OURS, LATER] {
            let k = kustomization("True", "ReconciliationSucceeded", commit);
            assert_eq!(run(Some(&k), None, &[], now).phase, Phase::Applied);
            let d = deployment(1, true);
            let ready = pod(true, json!({"running": {}}), json!({}));
            let s = run(Some(&k), Some(&d), &[&ready], now);
            assert_eq!(
                (s.phase, s.health, s.ready_pods),
                (Phase::Running, Health::Healthy, 1)
            );
            assert_eq!(s.not_running_since, None);
            // Available but no ready pod (or none at all): not running.
            let unready = pod(false, json!({"running": {}}), json!({}));
            assert_eq!(
                run(Some(&k), Some(&d), &[&unready], now).phase,
                Phase::Applied
            );
        }
        // Ready=False at our revision is not applied.
        let failing = kustomization("False", "HealthCheckFailed", OURS);
        let s = run(Some(&failing), None, &[], now);
        assert_eq!((s.phase, s.health), (Phase::Committed, Health::Failing));
        assert_eq!(s.reasons[0].code, ReasonCode::FluxHealthCheckFailed);
        assert_eq!(s.reasons[0].message, "m x");
    }

    #[test]
    fn a_suspended_tenant_stops_at_applied() {
        let k = kustomization("True", "ReconciliationSucceeded", OURS);
        let d = deployment(0, false);
        let s = run(Some(&k), Some(&d), &[], 1_767_325_600);
        assert_eq!(
            (s.phase, s.health, s.not_running_since),
            (Phase::Applied, Health::Suspended, None)
        );
    }

    #[test]
    fn oom_is_named_before_the_crash_loop_it_causes_and_the_clock_makes_it_unhealthy() {
        let k = kustomization("True", "ReconciliationSucceeded", OURS);
        let d = deployment(1, false);
        let p = pod(
            false,
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}),
            json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
        );
        // The Deployment became unavailable at 00:10, after our commit (00:00): the clock starts then.
        let s = run(Some(&k), Some(&d), &[&p], 1_767_226_200 + 599);
        assert_eq!(s.health, Health::Failing);
        assert_eq!(s.not_running_since, Some(1_767_226_200));
        assert_eq!(s.reasons[0].code, ReasonCode::OomKilled);
        assert_eq!(s.reasons[0].object, "Pod customer-acme/p container gateway");
        let s = run(Some(&k), Some(&d), &[&p], 1_767_226_200 + 601);
        assert_eq!(s.health, Health::Unhealthy);
    }

    #[test]
    fn messages_are_cleaned_and_bounded() {
        assert_eq!(clean("a\u{1b}[0m\r\nb\u{202e}"), "a [0m  b ");
        let long = "y".repeat(MAX_MESSAGE_CHARS * 3);
        let cleaned = clean(&long);
        assert_eq!(cleaned.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cleaned.ends_with('…'));
    }
}
