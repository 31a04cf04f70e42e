//! Typed Flux and kustomize objects the compiler renders. Only the fields we use are modelled, each exactly as
//! the CRD names it (kustomize.toolkit.fluxcd.io/v1 Kustomization); unknown fields are errors, so a template
//! typo cannot reach the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// kustomize.toolkit.fluxcd.io/v1 Kustomization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FluxKustomization {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: FluxKustomizationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FluxKustomizationSpec {
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    pub path: String,
    pub prune: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    pub source_ref: SourceRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Decryption {
    pub provider: String,
    pub secret_ref: LocalRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// kustomize.config.k8s.io/v1beta1 Kustomization (a kustomization.yaml file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeFile {
    pub api_version: String,
    pub kind: String,
    pub resources: Vec<String>,
}

impl KustomizeFile {
    pub fn new(resources: Vec<String>) -> KustomizeFile {
        KustomizeFile {
            api_version: "kustomize.config.k8s.io/v1beta1".into(),
            kind: "Kustomization".into(),
            resources,
        }
    }
}
