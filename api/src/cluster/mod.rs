//! Hearing back from the cluster, read-only: git stays the only way the platform changes it.
//! This module owns the client configuration and the watch caches ([`watch`]: reflectors over
//! the tenants' Flux Kustomizations, Deployments and Pods), the Flux type it reads ([`flux`]),
//! the per-tenant pipeline committed → applied → running with its health reasons ([`pipeline`],
//! pure), and putting them together for a tenant or for all of them ([`status`]: our commit from
//! the state repo, ancestry, the unhealthy clock, the tenants-by-phase gauges), and telling Flux
//! after each push through its Receiver webhook ([`receiver`]).
//!
//! It must not write to the cluster, know HTTP, or import `http`, `routes` or `tenant_ops`:
//! handlers authorize first, then ask [`status`]. Off (`cluster.mode = "off"`, the default, and
//! dev mode) every answer says "no cluster connected" instead of failing.

pub mod flux;
pub mod pipeline;
pub mod receiver;
pub mod status;
pub mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

use crate::config::ClusterConfig;
use flux::Kustomization;
pub use watch::ClusterError;

/// What the answer says when no cluster is watched.
pub const NO_CLUSTER: &str = "no cluster connected";
/// What the answer says while the first lists are on their way.
pub const SYNCING: &str = "connecting to the cluster: the first lists have not arrived yet";

/// The cluster as the api sees it: off, or watched. Cheap to clone.
#[derive(Clone, Default)]
pub struct Cluster {
    watched: Option<Arc<Watched>>,
    /// Health notices the sweeper found and the platform bot has not taken yet.
    notices: Arc<std::sync::Mutex<std::collections::VecDeque<status::HealthNotice>>>,
}

/// The most health notices kept for the bot; older ones are dropped first (a replica without the
/// bot keeps none for long).
const MAX_QUEUED_NOTICES: usize = 10_000;

struct Watched {
    reflectors: watch::Reflectors,
    flux_namespace: String,
}

/// One tenant's objects as the caches hold them.
pub struct Observed {
    pub kustomization: Option<Arc<Kustomization>>,
    pub deployment: Option<Arc<Deployment>>,
    pub pods: Vec<Arc<Pod>>,
}

/// Whether the caches can answer.
pub enum Link<'a> {
    Off,
    Syncing,
    Synced(&'a Cluster),
}

impl Cluster {
    /// No cluster: every status says [`NO_CLUSTER`].
    pub fn off() -> Cluster {
        Cluster::default()
    }

    /// Connects as `[cluster]` says and starts the watchers (no request is made before the
    /// watchers' first list; an unreachable cluster shows as [`SYNCING`] and is retried).
    pub async fn start(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let Some(client) = watch::client(config).await? else {
            return Ok(Cluster::off());
        };
        tracing::info!(mode = ?config.mode, "cluster status: watching tenants' Kustomizations, Deployments and Pods");
        Ok(Cluster {
            watched: Some(Arc::new(Watched {
                reflectors: watch::start(client),
                flux_namespace: config.flux_namespace.clone(),
            })),
            notices: Default::default(),
        })
    }

    /// Off, still syncing, or ready to answer.
    pub fn link(&self) -> Link<'_> {
        match &self.watched {
            None => Link::Off,
            Some(w) if !w.reflectors.synced.load(Ordering::Acquire) => Link::Syncing,
            Some(_) => Link::Synced(self),
        }
    }

    /// The objects of tenant `name` (its Kustomization `tenant-<name>` in the Flux namespace, its
    /// gateway Deployment and Pods in `customer-<name>`), from the caches.
    pub fn observe(&self, name: &compiler::spec::TenantName) -> Option<Observed> {
        let w = self.watched.as_ref()?;
        let namespace = name.namespace();
        let kustomization = w
            .reflectors
            .kustomizations
            .get(&ObjectRef::new(&format!("tenant-{}", name.as_str())).within(&w.flux_namespace));
        let deployment = w
            .reflectors
            .deployments
            .get(&ObjectRef::new(watch::GATEWAY_DEPLOYMENT).within(&namespace));
        let pods = w
            .reflectors
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .collect();
        Some(Observed {
            kustomization,
            deployment,
            pods,
        })
    }

    /// Every tenant's objects at once (the pods grouped by namespace in one pass), for sweeps.
    pub fn observe_all(&self) -> Option<AllObserved> {
        let w = self.watched.as_ref()?;
        let mut pods: std::collections::HashMap<String, Vec<Arc<Pod>>> = Default::default();
        for pod in w.reflectors.pods.state() {
            if let Some(ns) = pod.metadata.namespace.clone() {
                pods.entry(ns).or_default().push(pod);
            }
        }
        Some(AllObserved {
            cluster: self.clone(),
            pods,
        })
    }

    /// Queues notices for the platform bot.
    pub fn queue_health_notices(&self, notices: Vec<status::HealthNotice>) {
        let mut queue = self.notices.lock().expect("health notices");
        queue.extend(notices);
        while queue.len() > MAX_QUEUED_NOTICES {
            queue.pop_front();
        }
    }

    /// Takes every queued health notice (the platform bot's notifier calls this each round).
    pub fn take_health_notices(&self) -> Vec<status::HealthNotice> {
        self.notices
            .lock()
            .expect("health notices")
            .drain(..)
            .collect()
    }

    /// Objects in the caches per kind (Kustomizations, Deployments, Pods).
    pub fn cached(&self) -> Option<(usize, usize, usize)> {
        let w = self.watched.as_ref()?;
        Some((
            w.reflectors.kustomizations.len(),
            w.reflectors.deployments.len(),
            w.reflectors.pods.len(),
        ))
    }
}

/// A sweep's view of the caches.
pub struct AllObserved {
    cluster: Cluster,
    pods: std::collections::HashMap<String, Vec<Arc<Pod>>>,
}

impl AllObserved {
    pub fn tenant(&self, name: &compiler::spec::TenantName) -> Observed {
        let namespace = name.namespace();
        let w = self.cluster.watched.as_ref().expect("observe_all checked");
        Observed {
            kustomization: w.reflectors.kustomizations.get(
                &ObjectRef::new(&format!("tenant-{}", name.as_str())).within(&w.flux_namespace),
            ),
            deployment: w
                .reflectors
                .deployments
                .get(&ObjectRef::new(watch::GATEWAY_DEPLOYMENT).within(&namespace)),
            pods: self.pods.get(&namespace).cloned().unwrap_or_default(),
        }
    }
}
