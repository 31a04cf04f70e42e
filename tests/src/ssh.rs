//! OpenSSH's sshd as a git host for the state repo: the SSH remote test and the push benchmark
//! start it on a random port with key authentication only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Makes an ed25519 key pair without a passphrase at `path` (and `path`.pub).
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// OpenSSH's sshd in the foreground on 127.0.0.1:`port`, accepting only `client_key`.
pub struct Sshd(Child);

impl Sshd {
    pub fn start(dir: &Path, port: u16, host_key: &Path, client_key: &Path) -> Sshd {
        // sshd refuses to start without its privilege separation folder.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {authorized}\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile {pid}\n",
                host = host_key.display(),
                authorized = authorized.display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd(child)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes `home`/.ssh/known_hosts list the host key of an sshd on 127.0.0.1:`port`, the file
/// libgit2 (like git) checks a server's key against.
pub fn list_host_key(home: &Path, port: u16, host_key: &Path) {
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_pub.trim()),
    )
    .unwrap();
}
