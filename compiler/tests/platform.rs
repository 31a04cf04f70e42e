//! The platform's own manifests (flux/platform/operators/, flux/platform/services/): what they promise
//! (the proxy never exposed, read-only RBAC, every Secret encrypted, images pinned in one place) and how
//! bad platform input is refused, as an attacker or a careless edit would try it.

mod support;

use compiler::platform::{Platform, PLATFORM_PATH};
use compiler::platform_render::{render_platform, SERVICES_DIR};
use compiler::Templates;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn platform_text() -> String {
    std::fs::read_to_string(support::repo_root().join(PLATFORM_PATH)).unwrap()
}

fn rendered() -> BTreeMap<String, Vec<Value>> {
    let inputs = support::repo_inputs();
    render_platform(&inputs.platform, &inputs.templates)
        .unwrap()
        .into_iter()
        .filter(|(path, _)| !path.ends_with("kustomization.yaml"))
        .map(|(path, text)| {
            let docs = compiler::yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
            (path, docs)
        })
        .collect()
}

fn objects() -> Vec<Value> {
    rendered().into_values().flatten().collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Renders with `edit` applied to the named template's source.
fn render_with_template(
    name: &str,
    edit: impl Fn(&str) -> String,
) -> Result<Vec<(String, String)>, compiler::Diagnostics> {
    let inputs = support::repo_inputs();
    let mut sources = inputs.templates.sources().clone();
    let text = edit(&sources[name]);
    sources.insert(name.to_string(), text);
    let templates = Templates::from_sources(sources).unwrap();
    render_platform(&inputs.platform, &templates)
}

#[test]
fn the_build_writes_exactly_what_the_platform_renders() {
    let inputs = support::repo_inputs();
    let root = support::repo_root();
    for (path, text) in render_platform(&inputs.platform, &inputs.templates).unwrap() {
        let on_disk = std::fs::read_to_string(root.join(&path)).unwrap();
        assert_eq!(
            on_disk, text,
            "{path} is stale: run `openclaw-compiler build`"
        );
    }
    assert!(compiler::is_generated_path(&format!(
        "{SERVICES_DIR}/api.yaml"
    )));
}

#[test]
fn the_token_proxy_is_never_exposed_outside_the_cluster() {
    let objects = objects();
    for o in &objects {
        if o["kind"] == "Service" {
            assert_eq!(o["spec"]["type"], "ClusterIP", "{o}");
        }
        if o["kind"] == "HTTPRoute" {
            for rule in o["spec"]["rules"].as_array().unwrap() {
                for backend in rule["backendRefs"].as_array().unwrap() {
                    assert_ne!(backend["name"], "token-proxy", "{o}");
                }
            }
        }
    }
    // Ingress to the proxy: tenant pods and the metrics scraper, on the proxy's port only.
    let policy = find(&objects, "NetworkPolicy", "token-proxy-ingress");
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["key"],
        "openclaw.cloud/tenant"
    );
    assert_eq!(
        rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    for rule in rules {
        assert!(rule["from"][0]["podSelector"].is_object(), "{rule}");
    }
}

#[test]
fn the_proxy_mounts_all_256_table_shards_in_one_folder() {
    let objects = objects();
    let deployment = find(&objects, "Deployment", "token-proxy");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let table = volumes
        .iter()
        .find(|v| v["name"] == "tenant-table")
        .unwrap();
    let sources = table["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 256);
    let names: BTreeSet<&str> = sources
        .iter()
        .map(|s| s["configMap"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 256);
    assert!(names.contains("tenant-table-00") && names.contains("tenant-table-ff"));
    // The proxy's pods carry the labels tenants' egress policy allows.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let inputs = support::repo_inputs();
    for (k, v) in &inputs.platform.token_proxy.pod_labels {
        assert_eq!(labels[k], Value::String(v.clone()));
    }
    let hpa = find(&objects, "HorizontalPodAutoscaler", "token-proxy");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
}

#[test]
fn the_api_may_only_read_cluster_status() {
    let objects = objects();
    let role = find(&objects, "ClusterRole", "openclaw-api-status-reader");
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(
            rule["verbs"],
            serde_json::json!(["get", "list", "watch"]),
            "{rule}"
        );
        for r in rule["resources"].as_array().unwrap() {
            assert!(
                ["kustomizations", "deployments", "pods"].contains(&r.as_str().unwrap()),
                "{rule}"
            );
        }
    }
    let deployment = find(&objects, "Deployment", "openclaw-api");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    find(&objects, "PodDisruptionBudget", "openclaw-api");
}

/// Every image the platform runs is pinned in templates/platform.yaml, and nowhere else.
#[test]
fn every_image_is_pinned_in_the_platform_config() {
    let text = platform_text();
    let mut images = BTreeSet::new();
    for o in objects() {
        if let Some(containers) = o["spec"]["template"]["spec"]["containers"].as_array() {
            for c in containers {
                images.insert(c["image"].as_str().unwrap().to_string());
            }
        }
        if o["kind"] == "Cluster" {
            images.insert(o["spec"]["imageName"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(images.len(), 4, "{images:?}");
    for image in &images {
        assert!(text.contains(&format!("image: {image}\n")), "{image}");
        assert!(!image.ends_with(":latest"), "{image}");
    }
}

/// Every Secret the platform's workloads read is SOPS-encrypted in flux/platform/secrets/ for exactly the
/// cluster's recipients, or made by an operator (CloudNativePG's `<cluster>-app`, cert-manager's TLS secret).
#[test]
fn every_secret_referenced_is_encrypted_in_git_or_made_by_an_operator() {
    let objects = objects();
    let mut referenced = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match k.as_str() {
                        "secretKeyRef" => {
                            out.insert(v["name"].as_str().unwrap().to_string());
                        }
                        "secret" if v["secretName"].is_string() => {
                            out.insert(v["secretName"].as_str().unwrap().to_string());
                        }
                        "accessKeyId" | "secretAccessKey" => {
                            out.insert(v["name"].as_str().unwrap().to_string());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    for o in &objects {
        walk(o, &mut referenced);
    }
    let clusters: BTreeSet<String> = objects
        .iter()
        .filter(|o| o["kind"] == "Cluster")
        .map(|o| format!("{}-app", o["metadata"]["name"].as_str().unwrap()))
        .collect();
    let inputs = support::repo_inputs();
    let namespace = &inputs.platform.token_proxy.namespace;
    let recipients = &inputs.platform.sops.age_recipients;
    let dir = support::repo_root().join("flux/platform/secrets");
    let mut in_git = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if file == "kustomization.yaml" {
            continue;
        }
        let name = file
            .strip_suffix(".sops.yaml")
            .unwrap_or_else(|| panic!("{file}: only *.sops.yaml files belong here"));
        let text = std::fs::read_to_string(&path).unwrap();
        compiler::sops::verify_without_keys(&text, name, namespace, recipients)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        in_git.insert(name.to_string());
    }
    let expected: BTreeSet<String> = referenced
        .iter()
        .filter(|s| !clusters.contains(*s))
        .cloned()
        .collect();
    assert_eq!(in_git, expected);
    assert!(clusters.is_subset(&referenced));
    // The Gateway's certificate is cert-manager's to write.
    let gateway = find(&objects, "Gateway", "openclaw-public");
    let certificate = find(&objects, "Certificate", "openclaw-public");
    assert_eq!(
        gateway["spec"]["listeners"][0]["tls"]["certificateRefs"][0]["name"],
        certificate["spec"]["secretName"]
    );
    // No generated file holds a Secret: the compiler never writes one in plaintext.
    assert!(objects.iter().all(|o| o["kind"] != "Secret"));
}

#[test]
fn backups_are_scheduled_for_every_database() {
    let objects = objects();
    let clusters: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Cluster").collect();
    assert_eq!(clusters.len(), 2);
    for c in clusters {
        let name = c["metadata"]["name"].as_str().unwrap();
        let store = &c["spec"]["backup"]["barmanObjectStore"];
        assert!(
            store["destinationPath"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{name}")),
            "{c}"
        );
        let scheduled = objects
            .iter()
            .find(|o| o["kind"] == "ScheduledBackup" && o["spec"]["cluster"]["name"] == name)
            .unwrap_or_else(|| panic!("no ScheduledBackup for {name}"));
        assert_eq!(scheduled["spec"]["method"], "barmanObjectStore");
    }
}

fn parse_error(edit: impl Fn(&str) -> String) -> String {
    let text = edit(&platform_text());
    assert_ne!(text, platform_text(), "the edit changed nothing");
    Platform::parse(PLATFORM_PATH, &text)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_platform_services_are_refused_with_where_and_how() {
    let e =
        parse_error(|t| t.replace("nango-server:hosted-0.69.15", "nango-server:hosted-0.69.14"));
    assert!(e.contains("0.69.15 or later"), "{e}");
    let e = parse_error(|t| t.replace("nango-server:hosted-0.69.15", "nango-server:latest"));
    assert!(e.contains("pinned"), "{e}");
    let e = parse_error(|t| {
        t.replace(
            "    replicas: 2\n    port: 8080",
            "    replicas: 1\n    port: 8080",
        )
    });
    assert!(
        e.contains("services.api.replicas") && e.contains("PodDisruptionBudget"),
        "{e}"
    );
    let e = parse_error(|t| t.replace("version: 0.29.0", "version: \">=0.29\""));
    assert!(e.contains("exact version"), "{e}");
    let e = parse_error(|t| t.replace("api: api.openclaw.cloud", "api: app.openclaw.cloud"));
    assert!(e.contains("used twice"), "{e}");
    let e = parse_error(|t| t.replace("api: api.openclaw.cloud", "api: \"api.openclaw.cloud\\n\""));
    assert!(e.contains("not a fully qualified DNS name"), "{e}");
    let e = parse_error(|t| t.replace("    instances: 3", "    instances: 1"));
    assert!(e.contains("services.postgres.instances"), "{e}");
    let e = parse_error(|t| t.replace("schedule: \"0 0 3 * * *\"", "schedule: \"0 3 * * *\""));
    assert!(e.contains("six fields"), "{e}");
    let e = parse_error(|t| {
        t.replace(
            "    targetCpuUtilization: 70",
            "    targetCpuUtilisation: 70",
        )
    });
    assert!(e.contains("targetCpuUtilisation"), "{e}");
    let e = parse_error(|t| {
        t.replace(
            "    minReplicas: 3\n    maxReplicas: 12",
            "    minReplicas: 3\n    maxReplicas: 2",
        )
    });
    assert!(e.contains("minReplicas"), "{e}");
}

#[test]
fn a_misspelt_field_in_a_platform_template_is_an_error_not_a_silent_drop() {
    // A Kubernetes kind: refused by its k8s-openapi type.
    let e = render_with_template("platform/api.json.j2", |t| {
        t.replacen("\"revisionHistoryLimit\"", "\"revisionHistoryLimmit\"", 1)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("spec.revisionHistoryLimmit") && e.contains("platform/api.json.j2"),
        "{e}"
    );
    // A custom resource: refused by its vendored CRD, even where the CRD's own schema is open.
    let e = render_with_template("platform/databases.json.j2", |t| {
        t.replacen("\"retentionPolicy\"", "\"retention\"", 1)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(".spec.backup.retention: not a field of the CRD"),
        "{e}"
    );
    let e = render_with_template("platform/entry.json.j2", |t| {
        t.replacen("\"Exact\"", "\"RegularExpression\"", 1)
    });
    // RegularExpression is a valid (implementation-specific) match type: the CRD, not a guess, decides.
    assert!(e.is_ok(), "{e:?}");
    let e = render_with_template("platform/entry.json.j2", |t| {
        t.replacen("\"Exact\"", "\"Glob\"", 1)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"Glob\" is not one of"), "{e}");
    // A kind nobody can check is refused.
    let e = render_with_template("platform/entry.json.j2", |t| {
        t.replacen(
            "\"kind\": \"ReferenceGrant\"",
            "\"kind\": \"ReferenceGrants\"",
            1,
        )
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot check"), "{e}");
}

/// Each tenant's Flux Kustomization sources the ExternalArtifact the generator makes of its shard folder, and
/// its path, relative to that artifact, is the tenant's folder.
#[test]
fn every_tenant_kustomization_sources_its_shards_artifact() {
    let objects = objects();
    let generator = find(&objects, "ArtifactGenerator", "tenant-shards");
    let spec = &generator["spec"];
    let pattern = spec["pathPattern"].as_str().unwrap();
    let folder_pattern = pattern.strip_prefix("@state/").unwrap();
    assert_eq!(spec["sources"][0]["alias"], "state");
    assert_eq!(spec["sources"][0]["kind"], "GitRepository");
    let artifact = &spec["artifacts"][0];
    assert_eq!(
        artifact["copy"][0]["from"],
        format!("{pattern}/**"),
        "the artifact is the whole shard folder"
    );
    let root = support::repo_root();
    let inputs = support::repo_inputs();
    let mut checked = 0;
    for tenant in &inputs.tenants {
        let name = &tenant.folder;
        let text =
            std::fs::read_to_string(root.join(compiler::layout::flux_kustomization_path(name)))
                .unwrap();
        let k: Value = compiler::yaml::parse(&text).unwrap();
        let shard = compiler::layout::shard_name(compiler::layout::shard_number(name));
        assert_eq!(k["spec"]["sourceRef"]["kind"], "ExternalArtifact");
        assert_eq!(
            k["spec"]["sourceRef"]["name"],
            artifact["name"]
                .as_str()
                .unwrap()
                .replace("{shard}", &shard)
        );
        let folder = folder_pattern.replace("{shard}", &shard);
        assert_eq!(folder, compiler::layout::output_shard_dir(&shard));
        let path = k["spec"]["path"].as_str().unwrap();
        let dir = root.join(&folder).join(path.strip_prefix("./").unwrap());
        assert_eq!(dir, root.join(compiler::layout::output_dir(name)));
        assert!(
            dir.join("kustomization.yaml").is_file(),
            "{}",
            dir.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn rendering_the_platform_is_deterministic() {
    let inputs = support::repo_inputs();
    let a = render_platform(&inputs.platform, &inputs.templates).unwrap();
    let b = render_platform(&inputs.platform, &inputs.templates).unwrap();
    assert_eq!(a, b);
}
