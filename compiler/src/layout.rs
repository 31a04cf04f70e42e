//! Where every tenant file lives in the repository. The compiler, the api and the tests build tenant paths
//! only through these functions.
//!
//! Tenants fan out over 256 shard folders named by the first byte of sha256(name), as two lowercase hex
//! digits: `tenants/<shard>/<name>/` holds a tenant's inputs, `flux/tenants/<shard>/<name>/` its generated
//! resources, and the tenant table's shard `<shard>` its proxy entry. A git tree object lists every entry of
//! its folder, so a flat folder of N tenants makes every commit rewrite an object whose size grows with N;
//! with the fan-out a change to one tenant rewrites folders of about N/256 entries (40 at 10,000 tenants)
//! plus a few of fixed size. The hash is stable (it depends on the name alone), so a tenant never moves.

use crate::diagnostics::Diagnostic;
use sha2::{Digest, Sha256};

/// The number of shard folders (and tenant-table shards): one per value of the hash's first byte.
pub const SHARDS: u32 = 256;
/// The folder of tenant specs.
pub const SPECS_DIR: &str = "tenants";
/// A tenant's spec, inside its folder.
pub const SPEC_FILE: &str = "tenant.yaml";
/// A tenant's SOPS-encrypted secrets, inside its folder.
pub const SECRETS_FILE: &str = "secrets.sops.yaml";
/// Files directly under tenants/ that are not shard folders.
pub const SPECS_DIR_FILES: &[&str] = &["tenant.schema.json", "README.md"];
/// The generated JSON Schema of tenant.yaml.
pub const SCHEMA_PATH: &str = "tenants/tenant.schema.json";
/// The folder of generated tenant output.
pub const OUTPUT_DIR: &str = "flux/tenants";
/// The index the cluster's parent `tenants` Kustomization applies: it lists the shard folders.
pub const INDEX_PATH: &str = "flux/tenants/kustomization.yaml";
/// Inside a tenant's output folder: every plain resource, one document each, in a fixed order.
pub const MANIFESTS_FILE: &str = "manifests.yaml";
/// Inside a tenant's output folder: the secrets file, copied through unchanged.
pub const SECRET_FILE: &str = "secret.sops.yaml";
/// kustomize's file name, for a tenant's folder and for each index.
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";
/// The folder of the token proxy's tenant table: one ConfigMap file per shard and their kustomization.
pub const TABLE_DIR: &str = "flux/platform/tenant-table";
/// The prefix of a tenant-table ConfigMap's name (and of its file under [`TABLE_DIR`]).
pub const TABLE_CONFIG_MAP_PREFIX: &str = "tenant-table-";

/// A tenant's shard number, 0 to 255: the first byte of sha256(name).
pub fn shard_number(name: &str) -> u32 {
    u32::from(Sha256::digest(name.as_bytes())[0])
}

/// A shard's folder name: two lowercase hex digits.
pub fn shard_name(shard: u32) -> String {
    debug_assert!(shard < SHARDS);
    format!("{shard:02x}")
}

/// The folder name of a tenant's shard.
pub fn shard_of(name: &str) -> String {
    shard_name(shard_number(name))
}

/// Whether `folder` names a shard: exactly two lowercase hex digits.
pub fn is_shard_name(folder: &str) -> bool {
    folder.len() == 2
        && folder
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// tenants/<shard>: the shard folder holding a tenant's input folder.
pub fn spec_shard_dir(name: &str) -> String {
    format!("{SPECS_DIR}/{}", shard_of(name))
}

/// tenants/<shard>/<name>: a tenant's input folder.
pub fn spec_dir(name: &str) -> String {
    format!("{SPECS_DIR}/{}/{name}", shard_of(name))
}

/// tenants/<shard>/<name>/tenant.yaml.
pub fn spec_path(name: &str) -> String {
    format!("{}/{SPEC_FILE}", spec_dir(name))
}

/// tenants/<shard>/<name>/secrets.sops.yaml.
pub fn secrets_path(name: &str) -> String {
    format!("{}/{SECRETS_FILE}", spec_dir(name))
}

/// flux/tenants/<shard>: a shard's output folder.
pub fn output_shard_dir(shard: &str) -> String {
    format!("{OUTPUT_DIR}/{shard}")
}

/// flux/tenants/<shard>/kustomization.yaml: lists the Flux Kustomizations of the shard's tenants.
pub fn shard_index_path(shard: &str) -> String {
    format!("{OUTPUT_DIR}/{shard}/{KUSTOMIZATION_FILE}")
}

/// flux/tenants/<shard>/<name>: a tenant's generated resources (the path of its Flux Kustomization).
pub fn output_dir(name: &str) -> String {
    format!("{OUTPUT_DIR}/{}/{name}", shard_of(name))
}

/// flux/tenants/<shard>/<name>.yaml: the tenant's Flux Kustomization, beside its folder.
pub fn flux_kustomization_path(name: &str) -> String {
    format!("{OUTPUT_DIR}/{}/{name}.yaml", shard_of(name))
}

/// flux/tenants/<shard>/<name>/manifests.yaml.
pub fn manifests_path(name: &str) -> String {
    format!("{}/{MANIFESTS_FILE}", output_dir(name))
}

/// flux/tenants/<shard>/<name>/secret.sops.yaml.
pub fn output_secret_path(name: &str) -> String {
    format!("{}/{SECRET_FILE}", output_dir(name))
}

/// flux/tenants/<shard>/<name>/kustomization.yaml.
pub fn output_kustomization_path(name: &str) -> String {
    format!("{}/{KUSTOMIZATION_FILE}", output_dir(name))
}

/// The name of a tenant-table shard's ConfigMap: `tenant-table-<shard>`.
pub fn table_config_map(shard: u32) -> String {
    format!("{TABLE_CONFIG_MAP_PREFIX}{}", shard_name(shard))
}

/// The data key of a shard inside its ConfigMap (and its file name where the proxy mounts it):
/// `tenants-<shard>.json`.
pub fn table_shard_key(shard: u32) -> String {
    format!("tenants-{}.json", shard_name(shard))
}

/// flux/platform/tenant-table/tenant-table-<shard>.yaml.
pub fn table_shard_path(shard: u32) -> String {
    format!("{TABLE_DIR}/{}.yaml", table_config_map(shard))
}

/// flux/platform/tenant-table/kustomization.yaml.
pub fn table_index_path() -> String {
    format!("{TABLE_DIR}/{KUSTOMIZATION_FILE}")
}

/// A tenant's paths, one `what: path` line each (the `openclaw-compiler path` command's output).
pub fn describe(name: &str) -> String {
    let shard = shard_of(name);
    [
        ("shard", shard.clone()),
        ("spec", spec_path(name)),
        ("secrets", secrets_path(name)),
        ("output", format!("{}/", output_dir(name))),
        ("flux-kustomization", flux_kustomization_path(name)),
        ("shard-index", shard_index_path(&shard)),
        ("tenant-table", table_shard_path(shard_number(name))),
        ("history", format!("git log -- '{SPECS_DIR}/*/{name}'")),
    ]
    .iter()
    .map(|(what, path)| format!("{what}: {path}\n"))
    .collect()
}

/// Checks that the tenant folder `folder`, found in shard folder `shard` of tenants/, is where its name
/// puts it.
pub fn check_spec_folder(shard: &str, folder: &str) -> Result<(), Diagnostic> {
    let right = shard_of(folder);
    if shard == right {
        return Ok(());
    }
    Err(Diagnostic::file(
        format!("{SPECS_DIR}/{shard}/{folder}"),
        format!(
            "tenant folder is in the wrong shard: {folder} belongs in {}/",
            spec_dir(folder)
        ),
    )
    .with_hint(format!(
        "move it with `git mv {SPECS_DIR}/{shard}/{folder} {}` (`openclaw-compiler path {folder}` prints a tenant's paths)",
        spec_dir(folder)
    )))
}

/// The problem with an entry directly under tenants/ that is neither a shard folder nor a known file.
pub fn misplaced_in_specs_dir(entry: &str, is_dir: bool) -> Diagnostic {
    if is_dir {
        Diagnostic::file(
            format!("{SPECS_DIR}/{entry}"),
            "folder is not a shard folder of tenants/",
        )
        .with_hint(format!(
            "tenants live in tenants/<shard>/<name>/, <shard> being the first two hex digits of sha256(name); \
             if this is tenant {entry:?}, move it with `git mv {SPECS_DIR}/{entry} {}`",
            spec_dir(entry)
        ))
    } else {
        Diagnostic::file(format!("{SPECS_DIR}/{entry}"), "unexpected file in tenants/").with_hint(
            "each tenant is a folder tenants/<shard>/<name>/ holding tenant.yaml and secrets.sops.yaml \
             (`openclaw-compiler path <name>` prints them)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_the_first_byte_of_the_names_sha256() {
        // printf acme | sha256sum: 82...
        assert_eq!(shard_of("acme"), "82");
        assert_eq!(shard_of("globex"), "5b");
        assert_eq!(spec_path("acme"), "tenants/82/acme/tenant.yaml");
        assert_eq!(secrets_path("acme"), "tenants/82/acme/secrets.sops.yaml");
        assert_eq!(output_dir("acme"), "flux/tenants/82/acme");
        assert_eq!(flux_kustomization_path("acme"), "flux/tenants/82/acme.yaml");
        assert_eq!(shard_index_path("82"), "flux/tenants/82/kustomization.yaml");
    }

    #[test]
    fn every_shard_name_is_recognised_and_nothing_else() {
        for s in 0..SHARDS {
            assert!(is_shard_name(&shard_name(s)));
        }
        for bad in ["8", "082", "8G", "8A", "..", "acme", ""] {
            assert!(!is_shard_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_folder_in_the_wrong_shard_names_the_right_path() {
        assert!(check_spec_folder("82", "acme").is_ok());
        let d = check_spec_folder("00", "acme").unwrap_err();
        let text = d.to_string();
        assert!(text.contains("tenants/00/acme"), "{text}");
        assert!(text.contains("tenants/82/acme/"), "{text}");
    }
}
