//! Property tests: any valid spec renders valid output, and the output says what the spec says.

mod support;

use compiler::TenantFiles;
use proptest::prelude::*;
use serde_json::Value;

fn spec_strategy() -> impl Strategy<Value = (String, String)> {
    let name = "[a-z][a-z0-9-]{0,38}[a-z0-9]".prop_filter("not reserved", |n| {
        !compiler::spec::RESERVED_NAMES.contains(&n.as_str())
    });
    (
        name,
        prop::sample::select(vec!["starter", "pro", "team"]),
        prop::bool::ANY,
        prop::sample::select(vec!["kimi/kimi-for-coding", "kimi/kimi-for-coding-highspeed", "kimi/k3-256k"]),
        prop::sample::select(vec!["off", "minimal", "low", "medium", "high"]),
        prop::sample::select(vec!["en", "de", "pt-BR", "zh-Hans"]),
        prop::collection::btree_set(1i64..(1 << 53), 1..8),
        prop::sample::subsequence(vec!["google", "github", "slack", "linear", "notion", "jira"], 0..=6),
        "[a-zA-Z0-9._-]{1,40}",
        any::<[u8; 32]>(),
        proptest::option::of(prop::sample::select(vec!["100m", "250m", "1"])),
    )
        .prop_map(|(name, tier, suspended, model, thinking, lang, ids, providers, conn, token, cpu)| {
            let ids: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
            let mut connections = String::new();
            if !providers.is_empty() {
                connections.push_str("  connections:\n");
                for p in &providers {
                    connections.push_str(&format!("    - provider: {p}\n      connectionId: \"{conn}\"\n"));
                }
            }
            let overrides = cpu.map(|c| format!("  overrides:\n    resources:\n      cpuRequest: \"{c}\"\n")).unwrap_or_default();
            let spec = format!(
                "apiVersion: openclaw.cloud/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  owner:\n    email: a@b.example\n    telegramUserId: {first}\n  tier: {tier}\n  state: {state}\n  agent:\n    model: {model}\n    thinking: {thinking}\n    language: {lang}\n    allowFrom: [{ids}]\n{connections}{overrides}  proxyToken:\n    sha256: {hash}\n",
                first = ids[0],
                state = if suspended { "suspended" } else { "active" },
                ids = ids.join(", "),
                hash = hex::encode(token),
            );
            (name, spec)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_spec_renders_valid_output((name, spec) in spec_strategy()) {
        let inputs = support::repo_inputs();
        let secrets = std::fs::read_to_string(support::repo_root().join(compiler::layout::secrets_path("acme"))).unwrap()
            .replace("namespace: customer-acme", &format!("namespace: customer-{name}"));
        let files = TenantFiles { folder: name.clone(), spec: Some(spec.clone()), secrets: Some(secrets.clone()) };
        let output = compiler::compile(&inputs.platform, &inputs.templates, std::slice::from_ref(&files))
            .unwrap_or_else(|d| panic!("valid spec rejected:\n{d}\n{spec}"));
        let parsed = compiler::spec::TenantSpec::parse("spec", &spec).unwrap();
        let dir = compiler::layout::output_dir(&name);
        // The tenant's kustomization lists exactly the files in its folder.
        let kustomization: Value = compiler::yaml::parse(&output.files[&format!("{dir}/kustomization.yaml")]).unwrap();
        let listed: Vec<&str> = kustomization["resources"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let in_dir: Vec<String> = output.files.keys().filter_map(|k| k.strip_prefix(&format!("{dir}/")).map(str::to_string)).filter(|f| f != "kustomization.yaml").collect();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        prop_assert_eq!(listed_sorted, in_dir.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(&output.files[&format!("{dir}/secret.sops.yaml")], &secrets);
        // Every object is in the tenant's namespace, and the Deployment follows the state.
        let deployment: k8s_openapi::api::apps::v1::Deployment = compiler::yaml::parse(&support::manifest(&output.files[&compiler::layout::manifests_path(&name)], "Deployment")).unwrap();
        let namespace = format!("customer-{name}");
        prop_assert_eq!(deployment.metadata.namespace.as_deref(), Some(namespace.as_str()));
        let spec_d = deployment.spec.unwrap();
        prop_assert_eq!(spec_d.replicas, Some(if parsed.spec.state == compiler::spec::TenantState::Active { 1 } else { 0 }));
        let pod = spec_d.template.spec.unwrap();
        let sc = pod.containers[0].security_context.clone().unwrap();
        prop_assert_eq!(sc.read_only_root_filesystem, Some(true));
        prop_assert_eq!(sc.allow_privilege_escalation, Some(false));
        // The config carries the allow-list as strings and points the model at the proxy.
        let cm: Value = compiler::yaml::parse(&support::manifest(&output.files[&compiler::layout::manifests_path(&name)], "ConfigMap")).unwrap();
        let config: Value = serde_json::from_str(cm["data"]["openclaw.json"].as_str().unwrap()).unwrap();
        let allow: Vec<String> = parsed.spec.agent.allow_from.iter().map(|i| i.to_string()).collect();
        prop_assert_eq!(config["channels"]["telegram"]["allowFrom"].clone(), serde_json::json!(allow));
        prop_assert_eq!(config["models"]["providers"]["kimi"]["baseUrl"].as_str(), Some(inputs.platform.token_proxy.url.as_str()));
        prop_assert_eq!(config["agents"]["defaults"]["model"]["primary"].as_str(), Some(parsed.spec.agent.model.as_str()));
        // The tenant's row in the proxy's table.
        let shard = compiler::tenant_table::shard_path(compiler::tenant_table::shard_of(&name));
        let entries = compiler::render::parse_table_shard(&output.files[&shard]).unwrap();
        prop_assert_eq!(entries.len(), 1);
        prop_assert_eq!(&entries[0].token_sha256, parsed.spec.proxy_token.sha256.as_str());
        prop_assert_eq!(entries[0].connections.len(), parsed.spec.connections.len());
        // The shard's index lists the tenant's Flux Kustomization, and the top index lists the shard.
        let shard_name = compiler::layout::shard_of(&name);
        let listed_in_shard = compiler::render::parse_shard_index(&output.files[&compiler::layout::shard_index_path(&shard_name)]).unwrap();
        prop_assert_eq!(listed_in_shard, vec![name.clone()]);
        let shards = compiler::render::parse_index(&output.files[compiler::layout::INDEX_PATH]).unwrap();
        prop_assert_eq!(shards, vec![shard_name.clone()]);
        // The Flux Kustomization builds the tenant's folder: its path inside its shard's artifact.
        let flux: Value = compiler::yaml::parse(&output.files[&compiler::layout::flux_kustomization_path(&name)]).unwrap();
        let flux_path = format!("./{name}");
        prop_assert_eq!(flux["spec"]["path"].as_str(), Some(flux_path.as_str()));
        prop_assert_eq!(format!("{}/{name}", compiler::layout::output_shard_dir(&shard_name)), dir.clone());
        let artifact = format!("tenants-{shard_name}");
        prop_assert_eq!(flux["spec"]["sourceRef"]["name"].as_str(), Some(artifact.as_str()));
    }
}
