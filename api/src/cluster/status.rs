//! A tenant's status, put together: our last commit for it (from the state repo), its objects
//! from the watch caches, ancestry from the api's clone, and [`pipeline::evaluate`]. Also the
//! sweep over every tenant of the index (the admin view of tenants not running, the gauges of
//! tenants by phase). Blocking (git): call it off the async runtime.

use std::path::Path;

use compiler::spec::TenantName;
use serde::Serialize;

use super::pipeline::{self, Committed, Health, Inputs, Phase, PipelineStatus};
use super::{Cluster, Link, Observed, NO_CLUSTER, SYNCING};
use crate::reader::{Ancestry, ReadError};
use crate::store::TenantRow;

/// What `GET /v1/tenants/{name}/status` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    pub name: String,
    /// The cluster's status is known (the watch caches are synced).
    pub connected: bool,
    /// `connected`, "no cluster connected", or that the first lists are on their way.
    pub cluster: String,
    /// Our last commit for the tenant.
    pub committed: Option<String>,
    /// committed → applied → running with health and reasons; None without a cluster.
    pub pipeline: Option<PipelineStatus>,
}

/// The clock and the threshold of `unhealthy`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix seconds.
    pub now: i64,
    /// Seconds not running before a tenant is `unhealthy`.
    pub unhealthy_after: i64,
}

impl Clock {
    pub fn now(unhealthy_after_seconds: u64) -> Clock {
        Clock {
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            unhealthy_after: i64::try_from(unhealthy_after_seconds).unwrap_or(i64::MAX),
        }
    }
}

/// One tenant's status. `committed` is our last commit for it (the reader's view of the head).
pub fn for_tenant(
    cluster: &Cluster,
    repo: &Path,
    name: &TenantName,
    committed: Option<Committed>,
    clock: Clock,
) -> Result<TenantStatus, ReadError> {
    let (connected, message) = link_text(cluster);
    let mut status = TenantStatus {
        name: name.to_string(),
        connected,
        cluster: message.to_owned(),
        committed: committed.as_ref().map(|c| c.commit.clone()),
        pipeline: None,
    };
    if !connected {
        return Ok(status);
    }
    let Some(observed) = cluster.observe(name) else {
        return Ok(status);
    };
    let mut ancestry = Ancestry::open(repo)?;
    status.pipeline = Some(evaluate(
        &observed,
        committed.as_ref(),
        clock,
        &mut ancestry,
    ));
    Ok(status)
}

/// Every tenant of the index with its pipeline (empty when the caches cannot answer). The
/// committed commit is the index's (`last_commit`, the api's own last change to the tenant).
pub fn sweep(
    cluster: &Cluster,
    repo: &Path,
    rows: &[TenantRow],
    clock: Clock,
) -> Result<Vec<(String, PipelineStatus)>, ReadError> {
    if !link_text(cluster).0 {
        return Ok(Vec::new());
    }
    let Some(all) = cluster.observe_all() else {
        return Ok(Vec::new());
    };
    let mut ancestry = Ancestry::open(repo)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(name) = TenantName::parse(&row.name) else {
            continue;
        };
        let committed = Committed {
            commit: row.last_commit.clone(),
            at: row.updated_at / 1000,
        };
        let observed = all.tenant(&name);
        out.push((
            row.name.clone(),
            evaluate(&observed, Some(&committed), clock, &mut ancestry),
        ));
    }
    Ok(out)
}

/// Whether the caches answer, and the words for it.
pub fn link_text(cluster: &Cluster) -> (bool, &'static str) {
    match cluster.link() {
        Link::Off => (false, NO_CLUSTER),
        Link::Syncing => (false, SYNCING),
        Link::Synced(_) => (true, "connected"),
    }
}

fn evaluate(
    observed: &Observed,
    committed: Option<&Committed>,
    clock: Clock,
    ancestry: &mut Ancestry,
) -> PipelineStatus {
    let pods: Vec<&k8s_openapi::api::core::v1::Pod> = observed.pods.iter().map(|p| &**p).collect();
    let ancestry = std::cell::RefCell::new(ancestry);
    let contains = |applied: &str, ours: &str| ancestry.borrow_mut().contains(applied, ours);
    pipeline::evaluate(
        &Inputs {
            committed,
            kustomization: observed.kustomization.as_deref(),
            deployment: observed.deployment.as_deref(),
            pods: &pods,
            now: clock.now,
            unhealthy_after: clock.unhealthy_after,
        },
        &contains,
    )
}

/// Publishes the tenants by phase and health (`api_cluster_tenants{phase,health}`) and the
/// objects in the watch caches. The one place the cluster status touches the metrics crate.
pub fn export_gauges(cluster: &Cluster, swept: &[(String, PipelineStatus)]) {
    let healths = [
        Health::Healthy,
        Health::Progressing,
        Health::Failing,
        Health::Unhealthy,
        Health::Suspended,
    ];
    for phase in Phase::ALL {
        for health in healths {
            let n = swept
                .iter()
                .filter(|(_, s)| s.phase == phase && s.health == health)
                .count();
            crate::metrics::get()
                .cluster_tenants
                .with_label_values(&[phase.as_str(), health_str(health)])
                .set(n as i64);
        }
    }
    if let Some((k, d, p)) = cluster.cached() {
        let cached = &crate::metrics::get().cluster_cached_objects;
        cached.with_label_values(&["Kustomization"]).set(k as i64);
        cached.with_label_values(&["Deployment"]).set(d as i64);
        cached.with_label_values(&["Pod"]).set(p as i64);
    }
}

fn health_str(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Progressing => "progressing",
        Health::Failing => "failing",
        Health::Unhealthy => "unhealthy",
        Health::Suspended => "suspended",
    }
}

/// A tenant's health changed in a way its owner and the admins are told about: it became
/// `unhealthy`, or it runs again after being so. `key` names the episode (the tenant and since
/// when it was not running), so a notice is queued once whichever replica sees it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthNotice {
    pub tenant: String,
    pub key: String,
    /// True: became unhealthy; false: recovered.
    pub unhealthy: bool,
    /// The first reason (`CODE: message`), or that nothing was seen, for an unhealthy notice.
    pub reason: String,
}

/// The notices a sweep calls for, given the unhealthy episodes seen so far (tenant → not
/// running since), which it updates. Pure. A suspended tenant's episode ends without a notice.
pub fn health_transitions(
    episodes: &mut std::collections::HashMap<String, i64>,
    swept: &[(String, PipelineStatus)],
) -> Vec<HealthNotice> {
    let mut out = Vec::new();
    for (tenant, status) in swept {
        match status.health {
            Health::Unhealthy => {
                let since = status.not_running_since.unwrap_or_default();
                if episodes.get(tenant) == Some(&since) {
                    continue;
                }
                episodes.insert(tenant.clone(), since);
                let reason = status
                    .reasons
                    .first()
                    .map(|r| format!("{:?}: {}", r.code, r.message))
                    .unwrap_or_else(|| "nothing in the cluster says why".into());
                out.push(HealthNotice {
                    tenant: tenant.clone(),
                    key: format!("unhealthy:{tenant}:{since}"),
                    unhealthy: true,
                    reason,
                });
            }
            Health::Healthy => {
                if let Some(since) = episodes.remove(tenant) {
                    out.push(HealthNotice {
                        tenant: tenant.clone(),
                        key: format!("recovered:{tenant}:{since}"),
                        unhealthy: false,
                        reason: String::new(),
                    });
                }
            }
            Health::Suspended => {
                episodes.remove(tenant);
            }
            Health::Progressing | Health::Failing => {}
        }
    }
    out
}

/// Runs [`sweep`] and [`export_gauges`] every `interval` until the process ends, and queues the
/// [`HealthNotice`]s for the platform bot ([`Cluster::take_health_notices`]).
pub fn spawn_sweeper(
    cluster: Cluster,
    store: crate::store::Store,
    repo: std::path::PathBuf,
    unhealthy_after_seconds: u64,
    interval: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut episodes = std::collections::HashMap::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let rows = match store.tenants().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster status sweep: cannot read the tenants index");
                    continue;
                }
            };
            let (c, r) = (cluster.clone(), repo.clone());
            let clock = Clock::now(unhealthy_after_seconds);
            let swept = tokio::task::spawn_blocking(move || {
                let swept = sweep(&c, &r, &rows, clock);
                (c, swept)
            })
            .await;
            match swept {
                Ok((c, Ok(swept))) => {
                    export_gauges(&c, &swept);
                    c.queue_health_notices(health_transitions(&mut episodes, &swept));
                }
                Ok((_, Err(e))) => tracing::warn!(error = %e, "cluster status sweep failed"),
                Err(e) => tracing::warn!(error = %e, "cluster status sweep panicked"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pipeline::{Reason, ReasonCode};

    fn status(health: Health, since: Option<i64>) -> PipelineStatus {
        PipelineStatus {
            phase: if health == Health::Healthy {
                Phase::Running
            } else {
                Phase::Applied
            },
            health,
            reasons: vec![Reason {
                code: ReasonCode::CrashLoopBackOff,
                message: "back-off".into(),
                object: "Pod customer-acme/p".into(),
            }],
            committed: None,
            applied_commit: None,
            ready_pods: 0,
            not_running_since: since,
        }
    }

    #[test]
    fn an_episode_is_told_once_and_its_end_once() {
        let mut episodes = Default::default();
        let sweep = |h, s| vec![("acme".to_owned(), status(h, s))];
        assert!(health_transitions(&mut episodes, &sweep(Health::Failing, Some(5))).is_empty());
        let told = health_transitions(&mut episodes, &sweep(Health::Unhealthy, Some(5)));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].key, "unhealthy:acme:5");
        assert_eq!(told[0].reason, "CrashLoopBackOff: back-off");
        assert!(health_transitions(&mut episodes, &sweep(Health::Unhealthy, Some(5))).is_empty());
        let told = health_transitions(&mut episodes, &sweep(Health::Healthy, None));
        assert_eq!(
            (told[0].key.as_str(), told[0].unhealthy),
            ("recovered:acme:5", false)
        );
        assert!(health_transitions(&mut episodes, &sweep(Health::Healthy, None)).is_empty());
        // A new episode is a new notice; suspending ends one silently.
        assert_eq!(
            health_transitions(&mut episodes, &sweep(Health::Unhealthy, Some(9)))[0].key,
            "unhealthy:acme:9"
        );
        assert!(health_transitions(&mut episodes, &sweep(Health::Suspended, None)).is_empty());
        assert!(health_transitions(&mut episodes, &sweep(Health::Healthy, None)).is_empty());
    }
}
