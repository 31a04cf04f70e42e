//! The configuration the compiler renders for the platform's own services (flux/platform/services/) is
//! accepted by the real loaders of the api and the token proxy, with exactly the environment variables their
//! Deployments set, and the secret values those carry never show in the loaded configuration's Debug output.

use secrecy::ExposeSecret;
use serde_json::Value;
use std::path::Path;

/// The objects of a generated platform file.
fn objects(file: &str) -> Vec<Value> {
    let path = e2e::checkout().join("flux/platform/services").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    // The compiler writes one document per object, separated by `---` lines.
    text.split("\n---\n")
        .map(|doc| compiler::yaml::parse(doc).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind).unwrap()
}

/// Writes the ConfigMap's config.toml to `dir` and sets every environment variable the Deployment takes from
/// a Secret to a recognisable value; returns the config path and those values.
fn prepare(
    file: &str,
    dir: &Path,
    value_for: impl Fn(&str) -> String,
) -> (std::path::PathBuf, Vec<String>) {
    let objects = objects(file);
    let toml = find(&objects, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let mut secrets = Vec::new();
    for env in container["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        let value = match env["value"].as_str() {
            Some(v) => v.to_string(),
            None => {
                let v = value_for(name);
                secrets.push(v.clone());
                v
            }
        };
        std::env::set_var(name, value);
    }
    (path, secrets)
}

#[test]
fn the_rendered_api_config_loads_with_its_deployments_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (path, secrets) = prepare("api.yaml", dir.path(), |name| match name {
        "OPENCLAW_API_DATABASE_URL" => {
            "postgres://openclaw:pg-secret-value@openclaw-api-db-rw:5432/openclaw".into()
        }
        "OPENCLAW_API_PROXY_CREDENTIALS" => {
            format!("[{{name=\"token-proxy\",sha256=\"{}\"}}]", "ab".repeat(32))
        }
        other => panic!("unexpected secret variable {other}"),
    });
    assert_eq!(secrets.len(), 2);
    let config = api::config::Config::load(Some(&path)).unwrap();
    assert!(!config.dev_mode);
    assert_eq!(config.listen.port(), 8080);
    assert!(config
        .database_url
        .expose_secret()
        .starts_with("postgres://"));
    assert_eq!(config.proxy_credentials.len(), 1);
    assert_eq!(config.repo.branch, "main");
    assert!(config.repo.remote_url.expose_secret().starts_with("ssh://"));
    assert!(config
        .auth
        .private_key_path
        .as_ref()
        .unwrap()
        .starts_with("/var/run/secrets/openclaw-api"));
}

#[test]
fn the_rendered_proxy_config_loads_and_never_shows_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (path, secrets) = prepare("token-proxy.yaml", dir.path(), |name| {
        format!("secret-value-of-{}", name.to_lowercase())
    });
    assert_eq!(secrets.len(), 4);
    let config = proxy::Config::load(Some(&path)).unwrap();
    assert_eq!(
        config.table_dir,
        Path::new(compiler::platform_render::TABLE_MOUNT)
    );
    assert!(config.nango.is_some() && config.api.is_some());
    assert!(config.upstreams.anthropic.is_some() && config.upstreams.openai.is_some());
    let shown = format!("{config:?}");
    for secret in &secrets {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
}
