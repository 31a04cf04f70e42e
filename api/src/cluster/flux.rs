//! Flux's `kustomize.toolkit.fluxcd.io/v1` Kustomization as the cluster status reads it: a kube
//! `CustomResource` whose status carries the fields the pipeline needs (`conditions`,
//! `lastAppliedRevision`, `lastAppliedOriginRevision`, `lastAttemptedRevision`,
//! `observedGeneration`). The spec keeps only what a status decision reads (`suspend`) and the
//! fields that say what is reconciled (`path`, `interval`); serde ignores the rest, so an object
//! of a newer Flux still reads. The vendored CRD (`compiler/crds/`) is the reference.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The part of a Flux Kustomization's spec the status reads.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    plural = "kustomizations",
    namespaced,
    status = "KustomizationStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// The folder of the source reconciled (`./<tenant>` within its shard's artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// A suspended Kustomization applies nothing until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// What kustomize-controller reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The revision of the artifact applied last: for a GitRepository source
    /// `<branch>@sha1:<commit>`; for the tenants' per-shard ExternalArtifacts a content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The origin revision of the applied artifact: for an ArtifactGenerator with
    /// `originRevision: "@state"` the state repo's `<branch>@sha1:<commit>` it was cut from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_origin_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The git commit named by a Flux revision: `<ref>@sha1:<hex>`, `sha1:<hex>` or a bare 40-hex
/// id (the form of Flux before v2.0). Digests (`sha256:…`) and anything else name no commit.
pub fn revision_commit(revision: &str) -> Option<&str> {
    let tail = revision.rsplit_once('@').map_or(revision, |(_, t)| t);
    let hex = tail.strip_prefix("sha1:").unwrap_or(tail);
    let ok = hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn revisions_name_commits_in_every_flux_form() {
        assert_eq!(revision_commit(&format!("main@sha1:{C}")), Some(C));
        assert_eq!(
            revision_commit(&format!("refs/heads/main@sha1:{C}")),
            Some(C)
        );
        assert_eq!(revision_commit(&format!("sha1:{C}")), Some(C));
        assert_eq!(revision_commit(C), Some(C));
        assert_eq!(revision_commit(&format!("main/{C}")), None);
        assert_eq!(revision_commit("latest@sha256:0011"), None);
        assert_eq!(revision_commit(&format!("main@sha1:{}", &C[..39])), None);
        assert_eq!(revision_commit(&format!("main@sha1:{}z", &C[..39])), None);
        assert_eq!(revision_commit(""), None);
    }

    #[test]
    fn a_flux_object_reads_with_fields_the_type_does_not_know() {
        let json = serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "tenant-acme", "namespace": "flux-system"},
            "spec": {"path": "./acme", "interval": "10m", "prune": true, "sourceRef": {"kind": "ExternalArtifact", "name": "tenants-4c"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                    "message": "Applied revision: main@sha1:x", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
                "lastAppliedRevision": "latest@sha256:00",
                "lastAppliedOriginRevision": format!("main@sha1:{C}"),
                "inventory": {"entries": []}
            }
        });
        let k: Kustomization = serde_json::from_value(json).unwrap();
        let status = k.status.unwrap();
        assert_eq!(status.conditions[0].type_, "Ready");
        assert_eq!(
            status
                .last_applied_origin_revision
                .as_deref()
                .and_then(revision_commit),
            Some(C)
        );
    }
}
