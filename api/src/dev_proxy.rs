//! The token proxy of the one-command local platform: the real proxy, in process, on a second
//! loopback port, wired to the dev api the way a cluster wires them.
//!
//! - **Table.** [`export_tenant_table`] copies the state repo's rendered tenant table
//!   (`flux/platform/tenant-table/*.yaml`, the ConfigMaps Flux would apply) into a folder, file by
//!   file and atomically, whenever the state repo's branch moves; the proxy reads those ConfigMap
//!   files as they are and reloads on change. This stands in for Flux and the kubelet's ConfigMap
//!   sync, and is what tests use too.
//! - **Usage and budget.** The proxy ships usage to the dev api's `/internal/usage` and polls
//!   `/internal/budget` with the dev proxy credential; its usage journal lives in the data folder,
//!   so a killed dev platform loses no answered request.
//! - **Upstreams.** Any OpenAI- or Anthropic-compatible server (a local model server, a stand-in)
//!   given by option; without one, calls answer 502 naming the option to set.
//!
//! It owns no state of its own beyond those files and must not reach into the api's internals: it
//! talks to the api over HTTP like a deployed proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Repository};

use crate::dev::{DevError, DevPaths};

/// How often the state repo's branch is checked for a new table (a ref read when nothing moved).
pub const EXPORT_INTERVAL: Duration = Duration::from_millis(200);

/// The dev proxy's options (`openclaw-api dev --proxy-listen … --openai-base-url …`).
#[derive(Clone, Debug)]
pub struct DevProxyOptions {
    pub listen: SocketAddr,
    pub openai_base_url: Option<String>,
    pub anthropic_base_url: Option<String>,
    /// The key sent to the upstreams in place of tenants' tokens (local servers ignore it).
    pub upstream_api_key: String,
}

/// What a dev-platform call to a missing upstream is told.
pub const UNCONFIGURED_HINT: &str = "start the dev platform with --openai-base-url URL (an OpenAI-compatible server, for /v1/chat/completions) or --anthropic-base-url URL (an Anthropic-compatible one, for /v1/messages)";

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |e| DevError::Io(what.display().to_string(), e)
}

/// Writes the tenant table at the head of `branch` in the repository at `repo_path` into `dest`:
/// every `tenant-table-*.yaml` ConfigMap as rendered, each replaced atomically (written beside,
/// then renamed) and only when its content changed; files no longer in the table are removed.
/// Returns the commit exported.
pub fn export_tenant_table(
    repo_path: &Path,
    branch: &str,
    dest: &Path,
) -> Result<git2::Oid, DevError> {
    let repo = Repository::open(repo_path)?;
    let head = repo.refname_to_id(&format!("refs/heads/{branch}"))?;
    let tree = repo.find_commit(head)?.tree()?;
    let dir = tree
        .get_path(Path::new(compiler::tenant_table::DIR))
        .and_then(|e| repo.find_tree(e.id()))?;
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut wanted = std::collections::BTreeSet::new();
    for entry in dir.iter() {
        let Some(name) = entry.name() else { continue };
        if !(name.starts_with("tenant-table-") && name.ends_with(".yaml"))
            || entry.kind() != Some(ObjectType::Blob)
        {
            continue;
        }
        wanted.insert(name.to_owned());
        let blob = repo.find_blob(entry.id())?;
        let target = dest.join(name);
        if std::fs::read(&target).is_ok_and(|old| old == blob.content()) {
            continue;
        }
        let partial = dest.join(format!(".{name}.partial"));
        std::fs::write(&partial, blob.content()).map_err(io(&partial))?;
        std::fs::rename(&partial, &target).map_err(io(&target))?;
    }
    for entry in std::fs::read_dir(dest).map_err(io(dest))? {
        let entry = entry.map_err(io(dest))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tenant-table-") && !wanted.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(head)
}

/// Keeps `dest` equal to the table at the head of `branch` until the process ends.
pub fn spawn_table_export(repo_path: PathBuf, branch: String, dest: PathBuf) {
    tokio::spawn(async move {
        let mut exported: Option<git2::Oid> = None;
        let mut failing = false;
        loop {
            let (repo, b, d) = (repo_path.clone(), branch.clone(), dest.clone());
            let result = tokio::task::spawn_blocking(move || {
                let repo_handle = Repository::open(&repo)?;
                let head = repo_handle.refname_to_id(&format!("refs/heads/{b}"))?;
                if Some(head) == exported {
                    return Ok(head);
                }
                export_tenant_table(&repo, &b, &d)
            })
            .await;
            match result {
                Ok(Ok(head)) => {
                    if exported != Some(head) {
                        tracing::debug!(commit = %head, "tenant table exported for the dev proxy");
                    }
                    exported = Some(head);
                    failing = false;
                }
                Ok(Err(e)) if !failing => {
                    tracing::warn!(error = %e, "cannot export the tenant table for the dev proxy");
                    failing = true;
                }
                _ => {}
            }
            tokio::time::sleep(EXPORT_INTERVAL).await;
        }
    });
}

fn toml_string(s: &str) -> String {
    // A JSON string is a TOML basic string (same escapes).
    serde_json::to_string(s).expect("a string serialises")
}

/// The dev proxy's configuration: the exported table, the dev api's internal endpoints with the
/// dev proxy credential, a usage journal in the data folder, and the given upstreams.
pub fn proxy_config(
    paths: &DevPaths,
    api: SocketAddr,
    options: &DevProxyOptions,
) -> Result<proxy::Config, DevError> {
    let credential =
        std::fs::read_to_string(paths.proxy_credential()).map_err(io(&paths.proxy_credential()))?;
    let mut text = format!(
        "listen = {listen}\ntable_dir = {table}\ntable_reload_interval_ms = 200\n\n\
         [upstreams]\nunconfigured_hint = {hint}\n\n\
         [api]\nbase_url = {api}\ncredential = {credential}\n\n\
         [usage]\njournal_dir = {journal}\n",
        listen = toml_string(&options.listen.to_string()),
        table = toml_string(&paths.tenant_table().display().to_string()),
        hint = toml_string(UNCONFIGURED_HINT),
        api = toml_string(&format!("http://{api}")),
        credential = toml_string(credential.trim()),
        journal = toml_string(&paths.usage_journal().display().to_string()),
    );
    for (key, url) in [
        ("openai", &options.openai_base_url),
        ("anthropic", &options.anthropic_base_url),
    ] {
        if let Some(url) = url {
            text.push_str(&format!(
                "\n[upstreams.{key}]\nbase_url = {}\napi_key = {}\n",
                toml_string(url),
                toml_string(&options.upstream_api_key)
            ));
        }
    }
    // The configuration holds the credential: its errors name keys, never values.
    proxy::Config::from_toml(&text).map_err(|e| DevError::Seed(e.to_string()))
}

/// Exports the table once (so that the proxy starts with one), keeps exporting, and starts the
/// proxy. The proxy runs until the process ends.
pub async fn start(
    paths: &DevPaths,
    state_branch: &str,
    api: SocketAddr,
    options: &DevProxyOptions,
) -> Result<proxy::Running, DevError> {
    let (repo, dest) = (paths.state_repo(), paths.tenant_table());
    let branch = state_branch.to_owned();
    tokio::task::spawn_blocking(move || export_tenant_table(&repo, &branch, &dest))
        .await
        .map_err(|e| DevError::Seed(e.to_string()))??;
    spawn_table_export(
        paths.state_repo(),
        state_branch.to_owned(),
        paths.tenant_table(),
    );
    let config = proxy_config(paths, api, options)?;
    proxy::start(config)
        .await
        .map_err(|e| DevError::Seed(format!("starting the dev token proxy: {e}")))
}

/// How to call the dev proxy, printed when the dev platform starts.
pub fn banner(
    paths: &DevPaths,
    api: SocketAddr,
    proxy: SocketAddr,
    options: &DevProxyOptions,
) -> String {
    let upstream = |url: &Option<String>, flag: &str| match url {
        Some(url) => url.clone(),
        None => format!("none: calls answer 502 until you restart with {flag} URL"),
    };
    format!(
        r#"Token proxy      http://{proxy}   (tenant table: {table}, refreshed after every push)
  OpenAI-compatible upstream     {openai}
  Anthropic-compatible upstream  {anthropic}
  usage journal    {journal}

Call it as a tenant's agent would (the proxy token comes from a dev-only admin endpoint):
  TOKEN=$(curl -sS http://{api}/v1/dev/tenants/acme/proxy-token     -H "Authorization: Bearer $(cat {token_file})" | sed 's/.*"proxyToken":"\([^"]*\)".*//')
  curl -sS http://{proxy}/v1/chat/completions -H "Authorization: Bearer $TOKEN"     -H 'Content-Type: application/json' -d '{{"model":"kimi-k2","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -sS "http://{api}/v1/tenants/acme/usage" -H "Authorization: Bearer $(cat {token_file})"
"#,
        table = paths.tenant_table().display(),
        openai = upstream(&options.openai_base_url, "--openai-base-url"),
        anthropic = upstream(&options.anthropic_base_url, "--anthropic-base-url"),
        journal = paths.usage_journal().display(),
        token_file = paths.admin_token().display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_follows_the_branch_and_the_proxy_reads_it() {
        let root = tempfile::tempdir().unwrap();
        let paths = DevPaths {
            root: root.path().join("dev"),
        };
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        crate::dev::prepare(&paths, checkout).unwrap();
        export_tenant_table(&paths.state_repo(), "main", &paths.tenant_table()).unwrap();
        let files = std::fs::read_dir(paths.tenant_table()).unwrap().count();
        assert_eq!(files, 256, "every shard, as rendered");
        // A stale file is removed; unchanged ones are left alone.
        std::fs::write(paths.tenant_table().join("tenant-table-zz.yaml"), "x").unwrap();
        export_tenant_table(&paths.state_repo(), "main", &paths.tenant_table()).unwrap();
        assert!(!paths.tenant_table().join("tenant-table-zz.yaml").exists());
        // The proxy's own reader accepts the export as it is: an empty table of 256 shards.
        let options = DevProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            openai_base_url: None,
            anthropic_base_url: Some("http://127.0.0.1:9".into()),
            upstream_api_key: "k".into(),
        };
        let config = proxy_config(&paths, "127.0.0.1:8080".parse().unwrap(), &options).unwrap();
        let table = proxy::table::TenantTable::load_dir(&config.table_dir).unwrap();
        assert!(table.is_empty());
        assert!(config.upstreams.openai.is_none());
        assert!(!format!("{config:?}").contains(
            std::fs::read_to_string(paths.proxy_credential())
                .unwrap()
                .trim()
        ));
    }
}
