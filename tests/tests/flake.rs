//! flake.nix, as far as it can be checked without fetching anything: Nix parses it, and its `outputs`
//! function, evaluated by the real Nix evaluator against stand-ins for nixpkgs, crane and nix2container that
//! return their arguments, yields the binaries and images the platform's manifests name: every image in
//! templates/platform.yaml is `<name>:<tag>` of an image output, runs as the uid the manifests set, starts a
//! binary the workspace builds, and holds no shell. Building the outputs needs the inputs from the network
//! and is left to CI (README.md, "Nix").

use serde_json::Value;
use std::process::Command;

fn nix_instantiate() -> bool {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    e2e::require("nix-instantiate (Debian's nix-bin, .ci/install-tools)", ok)
}

/// Evaluates the flake's outputs against stand-in inputs and returns what the images and binaries are made of.
fn evaluate() -> Value {
    let flake = e2e::checkout().join("flake.nix");
    let expr = format!(
        r#"
let
  systems = [ "x86_64-linux" "aarch64-linux" ];
  genAttrs = names: f: builtins.listToAttrs (map (n: {{ name = n; value = f n; }}) names);
  stub = name: {{ inherit name; outPath = "/nix/store/stub-" + name; }};
  pkgs = {{
    pkg-config = stub "pkg-config"; openssl = stub "openssl"; libgit2 = stub "libgit2";
    libssh2 = stub "libssh2"; zlib = stub "zlib"; cacert = stub "cacert";
    runCommand = name: env: script: stub name;
    mkShell = args: args;
  }};
  nixpkgs = {{ lib = {{ inherit genAttrs; }}; legacyPackages = genAttrs systems (_: pkgs); }};
  crane = {{ mkLib = _: {{
    cleanCargoSource = src: src;
    buildDepsOnly = args: stub "deps";
    buildPackage = args: args // {{ outPath = "/nix/store/stub-" + args.pname; }};
  }}; }};
  nix2container = {{ packages = genAttrs systems (_: {{ nix2container.buildImage = args: args; }}); }};
  flake = import {flake};
  outputs = flake.outputs {{ self = outputs; inherit nixpkgs crane nix2container; }};
  image = i: {{
    inherit (i) name tag;
    inherit (i.config) User Entrypoint;
    copyToRoot = map (p: p.name) i.copyToRoot;
  }};
  binary = b: {{ inherit (b) pname version cargoExtraArgs; }};
in
  genAttrs systems (system: let p = outputs.packages.${{system}}; in {{
    names = builtins.attrNames p;
    images = {{ api = image p.api-image; proxy = image p.token-proxy-image; }};
    binaries = map binary [ p.openclaw-api p.token-proxy p.openclaw-compiler ];
    devShell = builtins.attrNames outputs.devShells.${{system}};
  }})
"#,
        flake = flake.display()
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr", &expr])
        .env("NIX_STATE_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evaluating flake.nix failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn nix_parses_the_flake() {
    if !nix_instantiate() {
        return;
    }
    let out = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(e2e::checkout().join("flake.nix"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_image_and_binary_the_manifests_name_is_a_flake_output() {
    if !nix_instantiate() {
        return;
    }
    let platform = compiler::source::platform_from_dir(&e2e::checkout()).unwrap();
    let services = &platform.services;
    let evaluated = evaluate();
    for system in ["x86_64-linux", "aarch64-linux"] {
        let outputs = &evaluated[system];
        for name in [
            "openclaw-api",
            "token-proxy",
            "openclaw-compiler",
            "api-image",
            "token-proxy-image",
            "default",
        ] {
            assert!(
                outputs["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n == name),
                "{system}: flake.nix has no packages.{name}"
            );
        }
        assert_eq!(outputs["devShell"], serde_json::json!(["default"]));
        for (key, pinned, uid, crate_dir) in [
            ("api", services.api.image.as_str(), services.api.uid, "api"),
            (
                "proxy",
                services.token_proxy.image.as_str(),
                services.token_proxy.uid,
                "proxy",
            ),
        ] {
            let image = &outputs["images"][key];
            let built = format!(
                "{}:{}",
                image["name"].as_str().unwrap(),
                image["tag"].as_str().unwrap()
            );
            assert_eq!(
                built, pinned,
                "templates/platform.yaml pins an image flake.nix does not build"
            );
            assert_eq!(
                image["User"],
                format!("{uid}:{uid}"),
                "{key}: the image's user is not the manifests' uid"
            );
            assert_ne!(uid, 0);
            // No shell, no package manager: the identity files and CA certificates only.
            assert_eq!(
                image["copyToRoot"],
                serde_json::json!(["openclaw-identity", "cacert"]),
                "{key}"
            );
            // The entrypoint is a binary the workspace builds from that crate.
            let entry = image["Entrypoint"][0].as_str().unwrap();
            let bin = entry.rsplit('/').next().unwrap();
            let binary = outputs["binaries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["pname"] == bin)
                .unwrap_or_else(|| panic!("{key}: no binary output builds {bin}"));
            assert_eq!(
                binary["cargoExtraArgs"],
                format!("--locked -p {crate_dir} --bin {bin}")
            );
            let manifest =
                std::fs::read_to_string(e2e::checkout().join(crate_dir).join("Cargo.toml"))
                    .unwrap();
            assert!(
                manifest.contains(&format!("name = \"{bin}\"")),
                "{crate_dir} has no binary {bin}"
            );
            assert!(
                entry.starts_with(&format!("/nix/store/stub-{bin}/bin/")),
                "{entry}"
            );
        }
    }
}
