//! The client and the reflectors: one kube client built from `[cluster]` (a URL, a kubeconfig
//! or the pod's in-cluster service account), and one watcher per kind (tenants' Flux
//! Kustomizations, their Deployments and Pods, label-selected across all namespaces) feeding an
//! in-memory store. The watchers list once, then follow the watch; a dropped connection resumes
//! from the last resourceVersion, a `410 Gone` relists, and errors back off (kube's default
//! backoff) without ever ending the task. Reads only: get, list and watch.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::flux::Kustomization;
use crate::config::{ClusterConfig, ClusterMode};

/// Every Kustomization the compiler renders for a tenant carries this label (its value is the
/// tenant's name), and so does every object of the tenant's folder.
pub const TENANT_LABEL: &str = "openclaw.cloud/tenant";
/// The tenant's gateway Deployment and Pods, and only them.
pub const GATEWAY_SELECTOR: &str = "app.kubernetes.io/name=openclaw-gateway,openclaw.cloud/tenant";
/// The Deployment the compiler renders in each tenant's namespace.
pub const GATEWAY_DEPLOYMENT: &str = "openclaw-gateway";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.url {0:?} is not a URL: {1}")]
    Url(String, String),
    #[error("cluster.kubeconfig_path {0}: {1}")]
    Kubeconfig(String, String),
    #[error("in-cluster configuration (cluster.mode = \"in-cluster\"): {0}")]
    InCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// The watch caches.
pub struct Reflectors {
    pub kustomizations: Store<Kustomization>,
    pub deployments: Store<Deployment>,
    pub pods: Store<Pod>,
    /// All three have listed once.
    pub synced: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Reflectors {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The kube client `[cluster]` describes (None when it is off).
pub async fn client(config: &ClusterConfig) -> Result<Option<Client>, ClusterError> {
    let kube_config = match config.mode {
        ClusterMode::Off => return Ok(None),
        ClusterMode::Url => {
            let url = config.url.clone().unwrap_or_default();
            let uri = url
                .parse::<axum::http::Uri>()
                .map_err(|e| ClusterError::Url(url.clone(), e.to_string()))?;
            kube::Config::new(uri)
        }
        ClusterMode::Kubeconfig => {
            let path = config.kubeconfig_path.clone().unwrap_or_default();
            let shown = path.display().to_string();
            let file = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| ClusterError::Kubeconfig(shown.clone(), e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClusterError::Kubeconfig(shown, e.to_string()))?
        }
        ClusterMode::InCluster => {
            kube::Config::incluster().map_err(|e| ClusterError::InCluster(e.to_string()))?
        }
    };
    Client::try_from(kube_config)
        .map(Some)
        .map_err(|e| ClusterError::Client(e.to_string()))
}

/// Starts the three watchers on `client`; they run until the returned [`Reflectors`] is dropped.
pub fn start(client: Client) -> Reflectors {
    let synced = Arc::new(AtomicBool::new(false));
    let (kustomizations, k_task) = reflect(
        Api::<Kustomization>::all(client.clone()),
        watcher::Config::default().labels(TENANT_LABEL),
        |k: &mut Kustomization| {
            k.metadata.managed_fields = None;
            k.metadata.annotations = None;
        },
    );
    let (deployments, d_task) = reflect(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().labels(GATEWAY_SELECTOR),
        |d: &mut Deployment| {
            // The pod template is most of a Deployment and the status reads none of it.
            d.metadata.managed_fields = None;
            d.metadata.annotations = None;
            if let Some(spec) = &mut d.spec {
                spec.template = Default::default();
            }
        },
    );
    let (pods, p_task) = reflect(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(GATEWAY_SELECTOR),
        |p: &mut Pod| {
            p.metadata.managed_fields = None;
            p.metadata.annotations = None;
            p.spec = None;
        },
    );
    let ready = {
        let (k, d, p, synced) = (
            kustomizations.clone(),
            deployments.clone(),
            pods.clone(),
            synced.clone(),
        );
        tokio::spawn(async move {
            let all = futures::future::try_join3(
                k.wait_until_ready(),
                d.wait_until_ready(),
                p.wait_until_ready(),
            )
            .await;
            if all.is_ok() {
                synced.store(true, Ordering::Release);
                tracing::info!("cluster status: the watch caches are synced");
            }
        })
    };
    Reflectors {
        kustomizations,
        deployments,
        pods,
        synced,
        tasks: vec![k_task, d_task, p_task, ready],
    }
}

/// One reflector: a watcher over `api` with `config`, each object trimmed by `trim` before it is
/// stored, run by a task that never ends on an error (it backs off and retries).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(trim));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                // kube's watcher errors name the request and the server's answer, never credentials.
                tracing::warn!(kind = %kind, error = %e, "cluster watch: retrying");
            }
        }
    });
    (reader, task)
}
