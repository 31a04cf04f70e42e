{
  # The three binaries built from Cargo.lock with crane, the api's and the token proxy's OCI images with
  # nix2container (non-root, no shell, nothing but the binary, CA certificates and /etc/passwd), and a dev
  # shell with the tools the tests use. What of this is verified where, and what is not: README.md, "Nix".
  description = "openclaw-cloud: the api, the token proxy and the GitOps compiler";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    crane.url = "github:ipetkov/crane";
    nix2container = {
      url = "github:nlewo/nix2container";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, crane, nix2container }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forSystems = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # The images' registry and the unprivileged user they run as; templates/platform.yaml pins
      # `<registry>/<name>:<version>` of each (a test checks that it names this flake's outputs).
      registry = "ghcr.io/openclaw-cloud";
      uid = 10001;

      perSystem = system: pkgs:
        let
          craneLib = crane.mkLib pkgs;
          n2c = nix2container.packages.${system}.nix2container;
          src = craneLib.cleanCargoSource ./.;
          # Every binary shares one build of the workspace's dependencies.
          common = {
            inherit src;
            strictDeps = true;
            pname = "openclaw-cloud";
            version = (builtins.fromTOML (builtins.readFile ./compiler/Cargo.toml)).package.version;
            nativeBuildInputs = [ pkgs.pkg-config ];
            buildInputs = [ pkgs.openssl pkgs.libgit2 pkgs.libssh2 pkgs.zlib ];
          };
          cargoArtifacts = craneLib.buildDepsOnly common;
          # One binary of one workspace member; the tests run separately (`.ci/run`), not inside Nix.
          binary = { crate, bin }:
            let version = (builtins.fromTOML (builtins.readFile ./${crate}/Cargo.toml)).package.version;
            in craneLib.buildPackage (common // {
              inherit cargoArtifacts version;
              pname = bin;
              cargoExtraArgs = "--locked -p ${crate} --bin ${bin}";
              doCheck = false;
            });
          # The user the image runs as, without a shell: /etc/passwd and /etc/group name it, nothing runs it.
          identity = pkgs.runCommand "openclaw-identity" { } ''
            mkdir -p $out/etc
            echo "openclaw:x:${toString uid}:${toString uid}::/nonexistent:/nonexistent" > $out/etc/passwd
            echo "openclaw:x:${toString uid}:" > $out/etc/group
          '';
          image = { name, package, bin, args ? [ ] }: n2c.buildImage {
            name = "${registry}/${name}";
            tag = package.version;
            copyToRoot = [ identity pkgs.cacert ];
            config = {
              User = "${toString uid}:${toString uid}";
              Entrypoint = [ "${package}/bin/${bin}" ] ++ args;
              Env = [ "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ];
            };
          };
        in rec {
          openclaw-api = binary { crate = "api"; bin = "openclaw-api"; };
          token-proxy = binary { crate = "proxy"; bin = "proxy"; };
          openclaw-compiler = binary { crate = "compiler"; bin = "openclaw-compiler"; };
          api-image = image { name = "openclaw-api"; package = openclaw-api; bin = "openclaw-api"; };
          token-proxy-image = image { name = "token-proxy"; package = token-proxy; bin = "proxy"; };
          default = openclaw-compiler;
        };
    in
    {
      packages = forSystems perSystem;

      devShells = forSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.cargo-nextest pkgs.pkg-config
            pkgs.openssl pkgs.libgit2 pkgs.libssh2
            # What the tests call (.ci/install-tools installs the same where Nix is not used).
            pkgs.age pkgs.sops pkgs.kubectl pkgs.checkov pkgs.actionlint pkgs.postgresql pkgs.openssh pkgs.git
            pkgs.nodejs_24
          ];
        };
      });
    };
}
