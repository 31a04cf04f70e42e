//! The rendered output checked by the real tools: `openclaw config validate` of the pinned OpenClaw version,
//! strict Kubernetes schemas (kubernetes-validate, 1.33), the Flux CRD schemas field by field, `kubectl
//! kustomize` on every folder Flux builds, and checkov. Under CI=true a missing tool fails the test.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const K8S_VERSION: &str = "1.33.0";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn sorted_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// flux/tenants/<shard>/: the shard folders, each with the index of its tenants' Flux Kustomizations.
fn shard_dirs() -> Vec<PathBuf> {
    let dirs = sorted_dirs(&support::repo_root().join(compiler::layout::OUTPUT_DIR));
    assert!(!dirs.is_empty());
    dirs
}

/// flux/tenants/<shard>/<name>/: every tenant's generated folder.
fn tenant_dirs() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = shard_dirs().iter().flat_map(|d| sorted_dirs(d)).collect();
    assert_eq!(dirs.len(), 3, "the three example tenants");
    dirs
}

/// Plain Kubernetes objects the compiler renders: each tenant's manifests file and the tenant table's
/// ConfigMaps (not the SOPS file, not kustomization.yaml).
fn rendered_kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = tenant_dirs()
        .iter()
        .map(|d| d.join(compiler::layout::MANIFESTS_FILE))
        .collect();
    for entry in std::fs::read_dir(support::repo_root().join(compiler::tenant_table::DIR)).unwrap()
    {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "kustomization.yaml" {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The platform's generated files: flux/platform/operators/ and flux/platform/services/, without their
/// kustomization.yaml.
fn platform_files() -> Vec<PathBuf> {
    let root = support::repo_root();
    let mut files: Vec<PathBuf> = [
        compiler::platform_render::OPERATORS_DIR,
        compiler::platform_render::SERVICES_DIR,
    ]
    .iter()
    .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
    .map(|e| e.unwrap().path())
    .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
    .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    files
}

/// The platform's objects, split into Kubernetes' own kinds and custom resources (with their file).
fn platform_documents() -> (Vec<Value>, Vec<(PathBuf, Value)>) {
    let mut core = Vec::new();
    let mut custom = Vec::new();
    for f in platform_files() {
        for doc in flux_documents(&f) {
            let api_version = doc["apiVersion"].as_str().unwrap();
            if api_version.contains('.')
                && !api_version.starts_with("rbac.authorization.k8s.io/")
                && !api_version.starts_with("networking.k8s.io/")
            {
                custom.push((f.clone(), doc));
            } else {
                core.push(doc);
            }
        }
    }
    (core, custom)
}

/// The number of YAML documents in `files`.
fn document_count(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            compiler::yaml::Deserializer::from_str(&std::fs::read_to_string(f).unwrap()).count()
        })
        .sum()
}

#[test]
fn openclaw_accepts_every_rendered_config() {
    let Some(openclaw) = support::tool("openclaw") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    for dir in tenant_dirs() {
        let manifests =
            std::fs::read_to_string(dir.join(compiler::layout::MANIFESTS_FILE)).unwrap();
        let cm: Value = compiler::yaml::parse(&support::manifest(&manifests, "ConfigMap")).unwrap();
        let config = cm["data"]["openclaw.json"].as_str().unwrap();
        let path = home.path().join("openclaw.json");
        std::fs::write(&path, config).unwrap();
        let (ok, text) = run(Command::new(&openclaw)
            .args(["config", "validate"])
            .env("HOME", home.path())
            .env("OPENCLAW_CONFIG_PATH", &path)
            .env("KIMI_API_KEY", "validation-only")
            .env("OPENCLAW_GATEWAY_TOKEN", "validation-only")
            .env("OPENCLAW_STATE_DIR", home.path().join("state")));
        assert!(
            ok && text.contains("Config valid"),
            "{}: openclaw config validate failed:\n{text}",
            dir.display()
        );
        assert!(
            !text.contains("warning"),
            "{}: openclaw warns:\n{text}",
            dir.display()
        );
    }
}

#[test]
fn every_kubernetes_object_passes_strict_schema_validation() {
    let Some(validate) = support::tool("kubernetes-validate") else {
        return;
    };
    let files = rendered_kubernetes_files();
    let (ok, text) = run(Command::new(validate)
        .args(["--strict", "-k", K8S_VERSION])
        .args(&files));
    assert!(ok, "kubernetes-validate failed:\n{text}");
    // One line per document: 8 per tenant's manifests file, one per tenant-table shard.
    assert_eq!(
        text.matches(" passed ").count(),
        document_count(&files),
        "{text}"
    );
    assert_eq!(document_count(&files), 3 * 8 + 256);
    // The bootstrap's plain Kubernetes objects too.
    let cluster = support::repo_root().join("flux/clusters/production/tenant-reconciler.yaml");
    let platform_ns = support::repo_root().join("flux/platform/namespace.yaml");
    let (ok, text) = run(Command::new(support::tool("kubernetes-validate").unwrap())
        .args(["--strict", "-k", K8S_VERSION])
        .arg(cluster)
        .arg(platform_ns));
    assert!(ok, "kubernetes-validate failed on the bootstrap:\n{text}");
}

#[test]
fn every_platform_kubernetes_object_passes_strict_schema_validation() {
    let Some(validate) = support::tool("kubernetes-validate") else {
        return;
    };
    let (core, _) = platform_documents();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("platform.yaml");
    let text: Vec<String> = core
        .iter()
        .map(|d| compiler::yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(&file, text.join("---\n")).unwrap();
    let (ok, out) = run(Command::new(validate)
        .args(["--strict", "-k", K8S_VERSION])
        .arg(&file));
    assert!(ok, "kubernetes-validate failed on the platform:\n{out}");
    assert_eq!(out.matches(" passed ").count(), core.len(), "{out}");
    // api 8, token proxy 7, Nango 5, two operator namespaces.
    assert_eq!(core.len(), 22, "{out}");
}

#[test]
fn every_platform_custom_resource_matches_its_vendored_crd() {
    let (_, custom) = platform_documents();
    let mut kinds: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for (file, doc) in &custom {
        if let Err(p) = compiler::crd::check_object(doc) {
            problems.extend(p.into_iter().map(|m| format!("{}: {m}", file.display())));
        }
        kinds.push(doc["kind"].as_str().unwrap().to_string());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ArtifactGenerator",
            "Certificate",
            "Cluster",
            "ClusterIssuer",
            "Gateway",
            "HTTPRoute",
            "HelmRelease",
            "HelmRepository",
            "ReferenceGrant",
            "ScheduledBackup"
        ]
    );
}

#[test]
fn kustomize_builds_every_folder_flux_builds() {
    let Some(kubectl) = support::tool("kubectl") else {
        return;
    };
    let root = support::repo_root();
    // Each tenant's folder (what its Flux Kustomization builds), each shard's index and the top index
    // (what the parent `tenants` Kustomization builds: Flux Kustomizations only).
    let mut dirs = tenant_dirs();
    dirs.extend(shard_dirs());
    dirs.push(root.join(compiler::layout::OUTPUT_DIR));
    dirs.push(root.join("flux/platform"));
    dirs.push(root.join(compiler::platform_render::OPERATORS_DIR));
    dirs.push(root.join(compiler::platform_render::SERVICES_DIR));
    dirs.push(root.join("flux/platform/secrets"));
    dirs.push(root.join("flux/clusters/production"));
    for dir in &dirs {
        let (ok, text) = run(Command::new(&kubectl).arg("kustomize").arg(dir));
        assert!(ok, "kubectl kustomize {} failed:\n{text}", dir.display());
        assert!(text.contains("kind:"), "{}: empty build", dir.display());
    }
    // App of apps: the top index and the shard indexes build exactly the tenants' Flux Kustomizations,
    // never a tenant's own resources.
    let mut names = Vec::new();
    for dir in shard_dirs()
        .into_iter()
        .chain([root.join(compiler::layout::OUTPUT_DIR)])
    {
        let (ok, text) = run(Command::new(&kubectl).arg("kustomize").arg(&dir));
        assert!(ok, "kubectl kustomize {} failed:\n{text}", dir.display());
        for doc in compiler::yaml::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            assert_eq!(
                (doc["apiVersion"].as_str(), doc["kind"].as_str()),
                (
                    Some("kustomize.toolkit.fluxcd.io/v1"),
                    Some("Kustomization")
                ),
                "{}: builds {doc}",
                dir.display()
            );
            if dir.ends_with(compiler::layout::OUTPUT_DIR) {
                names.push(doc["metadata"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    names.sort();
    assert_eq!(names, ["tenant-acme", "tenant-globex", "tenant-initech"]);
}

#[test]
fn checkov_finds_no_failed_checks() {
    let Some(checkov) = support::tool("checkov") else {
        return;
    };
    // checkov skips hidden folders, and tempfile's default names start with a dot.
    let scan = tempfile::Builder::new()
        .prefix("checkov-scan-")
        .tempdir()
        .unwrap();
    let mut files = rendered_kubernetes_files();
    files.extend(platform_files());
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(
            f,
            scan.path().join(format!(
                "{i:03}-{}",
                f.file_name().unwrap().to_string_lossy()
            )),
        )
        .unwrap();
    }
    // checkov exits 1 when a check fails; the JSON report on stdout says which.
    let out = Command::new(checkov)
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--skip-download",
            "-o",
            "json",
            "-d",
        ])
        .arg(scan.path())
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON report ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One report per framework: a list when checkov ran more than one.
    let report = match report {
        Value::Array(reports) => reports
            .into_iter()
            .find(|r| r["check_type"] == "kubernetes")
            .expect("a kubernetes report"),
        single => single,
    };
    let summary = &report["summary"];
    assert!(
        summary["resource_count"].as_u64().unwrap_or(0) >= 20,
        "checkov scanned nothing: {report}"
    );
    assert_eq!(
        summary["failed"],
        0,
        "checkov failed checks:\n{}",
        serde_json::to_string_pretty(&report["results"]["failed_checks"]).unwrap()
    );
    assert!(summary["passed"].as_u64().unwrap() > 50, "{summary}");
    // Every skip is one justified in templates/tenant/deployment.json.j2 or templates/platform/*.json.j2.
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let id = skipped["check_id"].as_str().unwrap();
        assert!(
            ["CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_38"].contains(&id),
            "unexpected skip {id}"
        );
    }
}

fn flux_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    compiler::yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn every_flux_object_matches_its_crd_field_by_field() {
    let root = support::repo_root();
    let mut files: Vec<PathBuf> = shard_dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.is_file() && p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "one Flux Kustomization per example tenant");
    for f in [
        "gitrepository.yaml",
        "operators.yaml",
        "platform.yaml",
        "tenants.yaml",
        "receivers.yaml",
    ] {
        files.push(root.join("flux/clusters/production").join(f));
    }
    let mut checked = 0;
    let mut problems = Vec::new();
    for f in &files {
        for doc in flux_documents(f) {
            match (
                doc["apiVersion"].as_str().unwrap(),
                doc["kind"].as_str().unwrap(),
            ) {
                ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
                | ("source.toolkit.fluxcd.io/v1", "GitRepository")
                | ("notification.toolkit.fluxcd.io/v1", "Receiver") => {}
                other => panic!("{}: unexpected {other:?}", f.display()),
            };
            // Against the CRDs vendored in compiler/crds/ (README there: source commits).
            if let Err(p) = compiler::crd::check_object(&doc) {
                problems.extend(p.into_iter().map(|m| format!("{}: {m}", f.display())));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3 + 6, "checked {checked} Flux objects");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
