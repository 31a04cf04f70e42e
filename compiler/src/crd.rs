//! Custom resources checked against their real CustomResourceDefinitions.
//!
//! k8s-openapi types cover Kubernetes' own kinds; the platform also renders custom resources (CloudNativePG
//! clusters, cert-manager certificates, Gateway API routes, Flux Helm releases). Their CRDs are vendored
//! unchanged under `compiler/crds/` (README there: repository, tag, commit) and embedded here, and every
//! custom resource the compiler renders is checked against its CRD's OpenAPI schema field by field: a field
//! the schema does not declare is an error even where the CRD itself would let it through, as are wrong
//! types, values outside an enum or pattern, and missing required fields. This module does no I/O.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Every vendored CRD, by file name.
const CRDS: &[(&str, &str)] = &[
    (
        "postgresql.cnpg.io_clusters.yaml",
        include_str!("../crds/postgresql.cnpg.io_clusters.yaml"),
    ),
    (
        "postgresql.cnpg.io_scheduledbackups.yaml",
        include_str!("../crds/postgresql.cnpg.io_scheduledbackups.yaml"),
    ),
    (
        "cert-manager.io_certificates.yaml",
        include_str!("../crds/cert-manager.io_certificates.yaml"),
    ),
    (
        "cert-manager.io_clusterissuers.yaml",
        include_str!("../crds/cert-manager.io_clusterissuers.yaml"),
    ),
    (
        "gateway.networking.k8s.io_gateways.yaml",
        include_str!("../crds/gateway.networking.k8s.io_gateways.yaml"),
    ),
    (
        "gateway.networking.k8s.io_httproutes.yaml",
        include_str!("../crds/gateway.networking.k8s.io_httproutes.yaml"),
    ),
    (
        "gateway.networking.k8s.io_referencegrants.yaml",
        include_str!("../crds/gateway.networking.k8s.io_referencegrants.yaml"),
    ),
    (
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        include_str!("../crds/helm.toolkit.fluxcd.io_helmreleases.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_helmrepositories.yaml"),
    ),
    (
        "source.extensions.fluxcd.io_artifactgenerators.yaml",
        include_str!("../crds/source.extensions.fluxcd.io_artifactgenerators.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_gitrepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_gitrepositories.yaml"),
    ),
    (
        "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
        include_str!("../crds/kustomize.toolkit.fluxcd.io_kustomizations.yaml"),
    ),
    (
        "notification.toolkit.fluxcd.io_receivers.yaml",
        include_str!("../crds/notification.toolkit.fluxcd.io_receivers.yaml"),
    ),
];

/// The OpenAPI schema of every served version of every vendored CRD, by (apiVersion, kind). Parsed once, on
/// first use: a compile that renders no custom resource never pays for it.
static SCHEMAS: LazyLock<BTreeMap<(String, String), Value>> = LazyLock::new(|| {
    let mut schemas = BTreeMap::new();
    for (file, text) in CRDS {
        let crd: Value = crate::yaml::parse(text)
            .unwrap_or_else(|e| panic!("compiler/crds/{file} is not YAML: {e}"));
        let group = crd["spec"]["group"].as_str().expect("a CRD has a group");
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("a CRD names its kind");
        for version in crd["spec"]["versions"].as_array().expect("CRD versions") {
            let name = version["name"].as_str().expect("a version has a name");
            schemas.insert(
                (format!("{group}/{name}"), kind.to_string()),
                version["schema"]["openAPIV3Schema"].clone(),
            );
        }
    }
    schemas
});

/// Whether a vendored CRD serves (apiVersion, kind).
pub fn knows(api_version: &str, kind: &str) -> bool {
    SCHEMAS.contains_key(&(api_version.to_string(), kind.to_string()))
}

/// Checks a whole custom resource against its CRD. Returns the problems, each prefixed with the field's
/// path (`.spec.backup.retentionPolicy`); `metadata` is checked by the caller against `ObjectMeta`.
pub fn check_object(object: &Value) -> Result<(), Vec<String>> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(schema) = SCHEMAS.get(&(api_version.to_string(), kind.to_string())) else {
        return Err(vec![format!(
            "no vendored CRD serves {api_version} {kind} (compiler/crds/README.md)"
        )]);
    };
    let mut problems = Vec::new();
    check(object, schema, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks `value` against an OpenAPI v3 schema at `path`, appending what is wrong to `problems`.
pub fn check(value: &Value, schema: &Value, path: &str, problems: &mut Vec<String>) {
    // Free-form by design (a Helm chart's values): the CRD cannot say more, neither can we.
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            problems.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    let ty = schema["type"].as_str();
    match value {
        Value::Object(map) => {
            if ty != Some("object") {
                problems.push(format!("{path}: an object where the schema has {ty:?}"));
                return;
            }
            if let Some(required) = schema["required"].as_array() {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        problems.push(format!("{path}: missing required field `{r}`"));
                    }
                }
            }
            let props = schema["properties"].as_object();
            for (k, v) in map {
                // Object metadata is ObjectMeta: checked by its k8s-openapi type, not here.
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(k))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                match sub {
                    Some(sub) => check(v, sub, &format!("{path}.{k}"), problems),
                    None if path.is_empty() && (k == "apiVersion" || k == "kind") => {}
                    None => problems.push(format!("{path}.{k}: not a field of the CRD")),
                }
            }
        }
        Value::Array(items) => {
            if ty != Some("array") {
                problems.push(format!("{path}: an array where the schema has {ty:?}"));
                return;
            }
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    problems.push(format!("{path}: more than {max} items"));
                }
            }
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{path}[{i}]"), problems);
            }
        }
        Value::String(s) => {
            if ty != Some("string") {
                problems.push(format!("{path}: a string where the schema has {ty:?}"));
            }
            if let Some(en) = schema["enum"].as_array() {
                if !en.iter().any(|e| e == s) {
                    problems.push(format!("{path}: {s:?} is not one of {en:?}"));
                }
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => problems.push(format!("{path}: {s:?} does not match {p}")),
                    // Go's RE2 and Rust's regex share a syntax; a pattern neither reads is the CRD's bug.
                    Err(e) => {
                        problems.push(format!("{path}: the CRD's pattern {p} is unusable: {e}"))
                    }
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if s.chars().count() as u64 > max {
                    problems.push(format!("{path}: longer than {max} characters"));
                }
            }
        }
        Value::Bool(_) if ty != Some("boolean") => {
            problems.push(format!("{path}: a boolean where the schema has {ty:?}"))
        }
        Value::Number(n) => {
            if ty != Some("integer") && ty != Some("number") {
                problems.push(format!("{path}: a number where the schema has {ty:?}"));
            } else if ty == Some("integer") && !(n.is_i64() || n.is_u64()) {
                problems.push(format!("{path}: {n} is not an integer"));
            }
            if let (Some(min), Some(v)) = (schema["minimum"].as_f64(), n.as_f64()) {
                if v < min {
                    problems.push(format!("{path}: {n} is below the minimum {min}"));
                }
            }
            if let (Some(max), Some(v)) = (schema["maximum"].as_f64(), n.as_f64()) {
                if v > max {
                    problems.push(format!("{path}: {n} is above the maximum {max}"));
                }
            }
        }
        Value::Null => problems.push(format!("{path}: null")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_vendored_crd_parses_and_serves_its_kinds() {
        for (api_version, kind) in [
            ("postgresql.cnpg.io/v1", "Cluster"),
            ("postgresql.cnpg.io/v1", "ScheduledBackup"),
            ("cert-manager.io/v1", "Certificate"),
            ("cert-manager.io/v1", "ClusterIssuer"),
            ("gateway.networking.k8s.io/v1", "Gateway"),
            ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            ("gateway.networking.k8s.io/v1", "ReferenceGrant"),
            ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
            ("source.toolkit.fluxcd.io/v1", "HelmRepository"),
            ("source.extensions.fluxcd.io/v1beta1", "ArtifactGenerator"),
            ("source.toolkit.fluxcd.io/v1", "GitRepository"),
            ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
            ("notification.toolkit.fluxcd.io/v1", "Receiver"),
        ] {
            assert!(knows(api_version, kind), "{api_version} {kind}");
        }
    }

    #[test]
    fn refuses_unknown_fields_wrong_types_and_missing_required_fields() {
        let good = json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
            "metadata": {"name": "x"},
            "spec": {"cluster": {"name": "db"}, "schedule": "0 0 3 * * *", "method": "barmanObjectStore"}
        });
        check_object(&good).unwrap();
        let mut typo = good.clone();
        typo["spec"]["schedul"] = json!("0 0 3 * * *");
        let problems = check_object(&typo).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p == ".spec.schedul: not a field of the CRD"),
            "{problems:?}"
        );
        let mut wrong = good.clone();
        wrong["spec"]["method"] = json!("tape");
        wrong["spec"]["immediate"] = json!("yes");
        wrong["spec"].as_object_mut().unwrap().remove("cluster");
        let problems = check_object(&wrong).unwrap_err().join("\n");
        assert!(
            problems.contains(".spec.method: \"tape\" is not one of"),
            "{problems}"
        );
        assert!(
            problems.contains(".spec.immediate: a string where"),
            "{problems}"
        );
        assert!(
            problems.contains("missing required field `cluster`"),
            "{problems}"
        );
        let unknown = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
        assert!(check_object(&unknown).unwrap_err()[0].contains("no vendored CRD"));
    }
}
