//! Rendering the platform itself: templates/platform.yaml's `services` section in, `flux/platform/operators/`
//! and `flux/platform/services/` out (the api, the token proxy, Nango, the CloudNativePG clusters, the public
//! entry, the per-shard artifacts tenants' Kustomizations source, and the operators as Flux HelmReleases).
//!
//! The design is the tenants' ([`crate::render`]): every value is computed here, each template lays out a
//! JSON list of objects, and each object is parsed into its k8s-openapi type or, for a custom resource,
//! checked against its vendored CRD ([`crate::crd`]); a field neither knows is an error. Nothing here reads
//! files: the output is a function of the platform config and the templates.

use crate::canonical;
use crate::crd;
use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::flux::KustomizeFile;
use crate::layout;
use crate::platform::Platform;
use crate::render::{dotted_path, generated_header};
use crate::templates::Templates;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The operators' folder: applied by the `platform-operators` Flux Kustomization, before anything that uses
/// their custom resources.
pub const OPERATORS_DIR: &str = "flux/platform/operators";
/// The platform services' folder, part of the `platform` Flux Kustomization.
pub const SERVICES_DIR: &str = "flux/platform/services";

/// Where the token proxy reads the tenant table: the 256 shard ConfigMaps projected into one folder.
pub const TABLE_MOUNT: &str = "/etc/token-proxy/tenant-table";
/// Where the api and the proxy read their TOML configuration.
const CONFIG_MOUNT: &str = "/etc/openclaw";
/// Where the token proxy keeps its usage journal (docs/proxy.md): an emptyDir, which outlives a killed
/// container (an OOM kill restarts the container in the same pod), so answered usage is shipped after it.
const PROXY_JOURNAL_MOUNT: &str = "/var/lib/token-proxy/usage";
/// Where the api reads the files of its Secret.
const API_SECRETS_MOUNT: &str = "/var/run/secrets/openclaw-api";

/// The templates behind each file of `flux/platform/services/`, in the order the kustomization lists them.
const SERVICE_FILES: &[(&str, &str)] = &[
    ("api.yaml", "platform/api.json.j2"),
    ("token-proxy.yaml", "platform/token-proxy.json.j2"),
    ("nango.yaml", "platform/nango.json.j2"),
    ("databases.yaml", "platform/databases.json.j2"),
    ("entry.yaml", "platform/entry.json.j2"),
    ("tenant-artifacts.yaml", "platform/tenant-artifacts.json.j2"),
];
/// The operator template, rendered once per operator.
use crate::templates::{API_CONFIG_TEMPLATE, OPERATOR_TEMPLATE, PROXY_CONFIG_TEMPLATE};

/// Every template this module renders; loading templates refuses a set that lacks one.
pub const TEMPLATES: &[&str] = crate::templates::PLATFORM;

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Renders every file of `flux/platform/operators/` and `flux/platform/services/`, by path.
pub fn render_platform(
    platform: &Platform,
    templates: &Templates,
) -> Result<Vec<(String, String)>, Diagnostics> {
    let services = &platform.services;
    let namespace = platform.token_proxy.namespace.as_str();
    let header = generated_header("templates/platform.yaml");
    let tables: Vec<Value> = (0..platform.token_proxy.tenant_table_shards)
        .map(|shard| {
            json!({"configMap": layout::table_config_map(shard), "key": layout::table_shard_key(shard)})
        })
        .collect();
    // The proxy's pods carry the labels tenants' egress policy selects them by, on top of the usual ones.
    let mut proxy_pod_labels = json!({
        "app.kubernetes.io/name": "token-proxy",
        "app.kubernetes.io/part-of": "openclaw-cloud",
        "app.kubernetes.io/managed-by": "openclaw-compiler",
    });
    for (k, v) in &platform.token_proxy.pod_labels {
        proxy_pod_labels[k] = json!(v);
    }
    let mut base = json!({
        "platform": platform,
        "proxyPodLabels": proxy_pod_labels,
        "namespace": namespace,
        "tenantTables": tables,
        "paths": {
            "table": TABLE_MOUNT,
            "config": CONFIG_MOUNT,
            "apiSecrets": API_SECRETS_MOUNT,
            "proxyJournal": PROXY_JOURNAL_MOUNT,
        },
    });
    let mut problems = Diagnostics::new();
    // The configuration files first: the workloads carry their checksums, so a change rolls the pods.
    let mut configs = serde_json::Map::new();
    for (key, template) in [
        ("api", API_CONFIG_TEMPLATE),
        ("tokenProxy", PROXY_CONFIG_TEMPLATE),
    ] {
        match templates.render(template, &minijinja::Value::from_serialize(&base)) {
            Ok(text) => {
                configs.insert(
                    key.into(),
                    json!({"toml": text, "sha256": sha256_hex(&text)}),
                );
            }
            Err(d) => problems.push(d),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    base["configs"] = Value::Object(configs);
    let context = minijinja::Value::from_serialize(&base);

    let mut files = Vec::new();
    let mut listed = Vec::new();
    for (file, template) in SERVICE_FILES {
        match render_documents(templates, template, &context) {
            Ok(text) => {
                files.push((format!("{SERVICES_DIR}/{file}"), format!("{header}{text}")));
                listed.push(file.to_string());
            }
            Err(d) => problems.extend(d),
        }
    }
    files.push((
        format!("{SERVICES_DIR}/kustomization.yaml"),
        format!("{header}{}", canonical::yaml(&KustomizeFile::new(listed))),
    ));

    let mut listed = Vec::new();
    for (name, chart, values) in [
        (
            "cloudnative-pg",
            &services.operators.cloudnative_pg,
            json!({"crds": {"create": true}}),
        ),
        (
            "cert-manager",
            &services.operators.cert_manager,
            // Gateway API support lets the ACME HTTP-01 solver answer through the platform's Gateway.
            json!({"crds": {"enabled": true}, "config": {"apiVersion": "controller.config.cert-manager.io/v1alpha1", "kind": "ControllerConfiguration", "enableGatewayAPI": true}}),
        ),
    ] {
        let mut ctx = base.clone();
        ctx["operator"] = json!({"name": name, "chart": chart, "values": values});
        let ctx = minijinja::Value::from_serialize(&ctx);
        match render_documents(templates, OPERATOR_TEMPLATE, &ctx) {
            Ok(text) => {
                files.push((
                    format!("{OPERATORS_DIR}/{name}.yaml"),
                    format!("{header}{text}"),
                ));
                listed.push(format!("{name}.yaml"));
            }
            Err(d) => problems.extend(d),
        }
    }
    files.push((
        format!("{OPERATORS_DIR}/kustomization.yaml"),
        format!("{header}{}", canonical::yaml(&KustomizeFile::new(listed))),
    ));
    problems.into_result(())?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Renders `template` (a JSON list of objects) and returns the objects as one multi-document YAML text, each
/// checked against its type.
fn render_documents(
    templates: &Templates,
    template: &str,
    context: &minijinja::Value,
) -> Result<String, Diagnostics> {
    let text = templates.render(template, context)?;
    let file = format!("templates/{template}");
    let objects: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
        Diagnostic::at(
            &file,
            &text,
            e.line(),
            e.column(),
            format!("renders invalid JSON: {e}"),
        )
        .with_hint(
            "the template must render a JSON list of objects; pass values through `| tojson`",
        )
    })?;
    let mut problems = Diagnostics::new();
    let mut out = String::new();
    for (i, object) in objects.into_iter().enumerate() {
        match checked_object(object) {
            Ok(yaml) => {
                if !out.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&yaml);
            }
            Err(message) => problems.push(
                Diagnostic::file(&file, format!("object {i} {message}"))
                    .with_hint("fix the field's name or value in the template"),
            ),
        }
    }
    problems.into_result(out)
}

/// Parses `value` into `T`, refusing any field `T` does not define, and writes it canonically.
fn typed<T: DeserializeOwned + Serialize>(value: Value) -> Result<String, String> {
    let mut unknown: Option<String> = None;
    let typed: T = serde_ignored::deserialize(value, |path| {
        unknown.get_or_insert_with(|| dotted_path(&path));
    })
    .map_err(|e| format!("is invalid: {e}"))?;
    if let Some(path) = unknown {
        return Err(format!("renders `{path}`, which its type does not define"));
    }
    Ok(canonical::yaml(&typed))
}

/// One rendered object, checked by its kind: Kubernetes' own kinds by their k8s-openapi type, custom resources
/// by their vendored CRD (and their metadata by `ObjectMeta`).
fn checked_object(object: Value) -> Result<String, String> {
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let at = |message: String| format!("({api_version} {kind} {name:?}) {message}");
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => typed::<Namespace>(object),
        ("v1", "ServiceAccount") => typed::<ServiceAccount>(object),
        ("v1", "ConfigMap") => typed::<ConfigMap>(object),
        ("v1", "Service") => typed::<Service>(object),
        ("apps/v1", "Deployment") => typed::<Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => typed::<PodDisruptionBudget>(object),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => typed::<HorizontalPodAutoscaler>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => typed::<NetworkPolicy>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<ClusterRoleBinding>(object)
        }
        (v, k) if crd::knows(v, k) => {
            typed::<ObjectMeta>(object["metadata"].clone()).map_err(|e| format!("metadata {e}"))?;
            crd::check_object(&object).map_err(|p| p.join("; "))?;
            Ok(canonical::yaml_value(&object))
        }
        _ => Err("is of a kind the compiler cannot check".to_string()),
    }
    .map_err(at)
}
