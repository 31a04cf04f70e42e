//! The state repo's write path against an SSH remote (a benchmark binary, not a timed test):
//! OpenSSH's sshd on 127.0.0.1 serves a bare repository that already holds `--tenants` tenants
//! in the fan-out layout; each provision writes a new tenant's six files and rewrites its shard's
//! index and tenant-table shard, one commit each, `--batch` commits per push. Two ways of making
//! the objects and the pack, with the same push (libgit2 over SSH, as the api does):
//!
//! - `handwritten`: the api's `StateRepo` (trees, commits, pack and index written by the api,
//!   flushed, refs under git's lock, background rollups);
//! - `git2-mempack`: libgit2 only: blobs, `TreeUpdateBuilder` trees and commits into a mempack
//!   backend, `Mempack::dump` into `Odb::packwriter` (libgit2's indexer writes the pack and its
//!   index), the pack folder and the new files flushed, the ref set by libgit2.
//!
//! Each variant gets its own copy of the seeded remote and its own clone. Reported per variant:
//! provisions per second over the run, and the latency of a batch (every provision of a batch is
//! answered when its push returns) at p50 and p99, split into building the commits and writing
//! plus pushing them.
//!
//! Run: `cargo bench -p e2e --bench state_repo_push -- --tenants 2000 --batches 60 --batch 4`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::config::Config;
use api::state_repo::{Edit, StateRepo};
use compiler::layout;
use e2e::ssh::{keygen, list_host_key, Sshd};
use git2::{Cred, FileMode, Oid, PushOptions, RemoteCallbacks, Repository, Signature};

struct Args {
    tenants: usize,
    batches: usize,
    batch: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut args = Args {
        tenants: 2000,
        batches: 60,
        batch: 4,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--tenants" => args.tenants = value(),
            "--batches" => args.batches = value(),
            "--batch" => args.batch = value().max(1),
            "--rounds" => args.rounds = value().max(1),
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown flag {other}; see the doc comment of this file"),
        }
    }
    args
}

/// Text of about `size` bytes, different for every tenant and file.
fn filler(kind: &str, name: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    let mut n = 0;
    while out.len() < size {
        writeln!(
            out,
            "{kind}: {name} line {n} {:016x}",
            rand::random::<u64>()
        )
        .unwrap();
        n += 1;
    }
    out
}

/// The files of a provisioned tenant, at the sizes the compiler writes (about).
fn tenant_files(name: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (layout::spec_path(name), filler("spec", name, 600)),
        (layout::secrets_path(name), filler("secrets", name, 1600)),
        (
            layout::manifests_path(name),
            filler("manifests", name, 6000),
        ),
        (
            layout::output_secret_path(name),
            filler("secret", name, 1600),
        ),
        (
            layout::output_kustomization_path(name),
            filler("kustomization", name, 200),
        ),
        (
            layout::flux_kustomization_path(name),
            filler("flux", name, 800),
        ),
    ]
}

/// The shard-wide files a provision rewrites: its shard's index and tenant-table shard.
fn shard_paths(name: &str) -> [String; 2] {
    [
        layout::shard_index_path(&layout::shard_of(name)),
        compiler::tenant_table::shard_path(layout::shard_number(name)),
    ]
}

/// A provision's edits, given what the shard files hold now.
fn provision_edits(name: &str, read: impl Fn(&str) -> Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let mut files = tenant_files(name);
    for path in shard_paths(name) {
        let mut data = read(&path);
        writeln!(data, "- {name}").unwrap();
        files.push((path, data));
    }
    files
}

/// A bare repository holding `tenants` tenants, in one pack.
fn seed(path: &Path, tenants: usize) {
    let repo = Repository::init_bare(path).unwrap();
    let empty = repo
        .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
        .unwrap();
    let mut shards: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut update = git2::build::TreeUpdateBuilder::new();
    for i in 0..tenants {
        let name = format!("seed-{i}");
        for (path, data) in tenant_files(&name) {
            update.upsert(path, repo.blob(&data).unwrap(), FileMode::Blob);
        }
        for path in shard_paths(&name) {
            writeln!(shards.entry(path).or_default(), "- {name}").unwrap();
        }
    }
    for (path, data) in shards {
        update.upsert(path, repo.blob(&data).unwrap(), FileMode::Blob);
    }
    let tree = repo
        .find_tree(update.create_updated(&repo, &empty).unwrap())
        .unwrap();
    let sig = Signature::now("seed", "seed@example.com").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "seed", &tree, &[])
        .unwrap();
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["repack", "-q", "-a", "-d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "git repack of the seed failed");
}

/// Per-batch timings of one variant.
#[derive(Default)]
struct Run {
    build: Vec<Duration>,
    push: Vec<Duration>,
    /// The libgit2 push call alone, where the variant can time it apart from writing the pack.
    wire: Vec<Duration>,
    total: Duration,
}

fn handwritten(args: &Args, url: &str, key: &Path, dir: &Path) -> Run {
    let mut config = Config::default().repo;
    config.local_path = dir.join("handwritten-clone.git");
    config.remote_url = url.to_owned().into();
    config.ssh_key_path = Some(key.to_owned());
    let mut state = StateRepo::open_or_clone(&config).unwrap();
    let sig = Signature::now("api", "api@example.com").unwrap();
    let mut tip = state.remote_tip().unwrap();
    let mut run = Run::default();
    let started = Instant::now();
    for b in 0..args.batches {
        let t = Instant::now();
        for k in 0..args.batch {
            let name = format!("hw-{b}-{k}");
            let (root, edits) = {
                let snapshot = state.snapshot(tip).unwrap();
                let edits: Vec<Edit> =
                    provision_edits(&name, |p| snapshot.file(p).unwrap().unwrap_or_default())
                        .into_iter()
                        .map(|(path, contents)| Edit::Write { path, contents })
                        .collect();
                (snapshot.root, edits)
            };
            let tree = state.edit_tree(root, &edits).unwrap();
            tip = state.commit(tip, tree, &sig, &sig, "provision").unwrap();
        }
        let built = t.elapsed();
        state.push(tip).unwrap();
        state.maintain();
        run.build.push(built);
        run.push.push(t.elapsed() - built);
    }
    run.total = started.elapsed();
    state.finish_maintenance();
    run
}

fn credentials(key: &Path) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |_url, username, _allowed| {
        Cred::ssh_key(username.unwrap_or("git"), None, key, None)
    });
    callbacks
}

/// The new files of `pack_dir` (not in `before`), flushed with the folder.
fn flush_new(pack_dir: &Path, before: &mut std::collections::HashSet<PathBuf>) {
    for entry in std::fs::read_dir(pack_dir).unwrap() {
        let path = entry.unwrap().path();
        if before.insert(path.clone()) {
            std::fs::File::open(&path).unwrap().sync_all().unwrap();
        }
    }
    std::fs::File::open(pack_dir).unwrap().sync_all().unwrap();
}

fn mempack(args: &Args, url: &str, key: &Path, dir: &Path) -> Run {
    let path = dir.join("mempack-clone.git");
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(credentials(key));
    let repo = git2::build::RepoBuilder::new()
        .bare(true)
        .fetch_options(fetch)
        .clone(url, &path)
        .unwrap();
    let odb = repo.odb().unwrap();
    let mempack = odb.add_new_mempack_backend(1000).unwrap();
    let pack_dir = path.join("objects/pack");
    let mut files: std::collections::HashSet<PathBuf> = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let sig = Signature::now("api", "api@example.com").unwrap();
    // A bare clone keeps the remote's branches as they are named there only for its HEAD branch.
    let mut tip: Oid = repo
        .refname_to_id("refs/heads/main")
        .or_else(|_| repo.refname_to_id("refs/remotes/origin/main"))
        .unwrap();
    let mut run = Run::default();
    let started = Instant::now();
    for b in 0..args.batches {
        let pushed = tip;
        let t = Instant::now();
        for k in 0..args.batch {
            let name = format!("mp-{b}-{k}");
            let parent = repo.find_commit(tip).unwrap();
            let base = parent.tree().unwrap();
            let read = |p: &str| {
                base.get_path(Path::new(p))
                    .ok()
                    .and_then(|e| repo.find_blob(e.id()).ok())
                    .map(|b| b.content().to_vec())
                    .unwrap_or_default()
            };
            let mut update = git2::build::TreeUpdateBuilder::new();
            for (path, data) in provision_edits(&name, read) {
                update.upsert(path, repo.blob(&data).unwrap(), FileMode::Blob);
            }
            let tree = repo
                .find_tree(update.create_updated(&repo, &base).unwrap())
                .unwrap();
            tip = repo
                .commit(None, &sig, &sig, "provision", &tree, &[&parent])
                .unwrap();
        }
        let built = t.elapsed();
        let t0 = Instant::now();
        // `Mempack::dump` packs every object reachable from each new commit (a whole snapshot,
        // 7.4 MB at 2,000 tenants); a pack builder walking from the new tip with the pushed tip
        // hidden packs only the new objects, as a push would.
        let mut builder = repo.packbuilder().unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push(tip).unwrap();
        walk.hide(pushed).unwrap();
        builder.insert_walk(&mut walk).unwrap();
        let mut pack = git2::Buf::new();
        builder.write_buf(&mut pack).unwrap();
        drop(builder);
        let t1 = Instant::now();
        let mut writer = odb.packwriter().unwrap();
        writer.write_all(&pack).unwrap();
        writer.commit().unwrap();
        drop(writer);
        mempack.reset().unwrap();
        let t2 = Instant::now();
        flush_new(&pack_dir, &mut files);
        if std::env::var_os("STATE_REPO_PUSH_PHASES").is_some() {
            eprintln!(
                "mempack phases: dump {:?} ({} bytes), packwriter {:?}, flush {:?}",
                t1 - t0,
                pack.len(),
                t2 - t1,
                t2.elapsed()
            );
        }
        repo.reference("refs/heads/main", tip, true, "provision")
            .unwrap();
        let mut rejected = None;
        let mut remote = repo.find_remote("origin").unwrap();
        let mut callbacks = credentials(key);
        callbacks.push_update_reference(|_, status| {
            rejected = status.map(str::to_owned);
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let pushing = Instant::now();
        remote
            .push(&["refs/heads/main:refs/heads/main"], Some(&mut options))
            .unwrap();
        run.wire.push(pushing.elapsed());
        drop(options);
        assert_eq!(rejected, None, "the push was refused");
        run.build.push(built);
        run.push.push(t.elapsed() - built);
    }
    run.total = started.elapsed();
    run
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(variant: &str, args: &Args, run: &Run) {
    let mut latency: Vec<Duration> = run
        .build
        .iter()
        .zip(&run.push)
        .map(|(a, b)| *a + *b)
        .collect();
    latency.sort();
    let mut build = run.build.clone();
    build.sort();
    let mut push = run.push.clone();
    push.sort();
    let provisions = args.batches * args.batch;
    let mut wire = run.wire.clone();
    wire.sort();
    let wire = if wire.is_empty() {
        "not timed apart".to_owned()
    } else {
        format!(
            "{:.1} / {:.1} ms",
            percentile(&wire, 0.5),
            percentile(&wire, 0.99)
        )
    };
    println!(
        "| {variant} | {} | {} | {provisions} | {:.0} /s | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {wire} |",
        args.tenants,
        args.batch,
        provisions as f64 / run.total.as_secs_f64(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        percentile(&build, 0.5),
        percentile(&build, 0.99),
        percentile(&push, 0.5),
        percentile(&push, 0.99),
    );
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let ssh_dir = dir.path().join("sshd");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let (host_key, client_key) = (ssh_dir.join("host_ed25519"), dir.path().join("api_ed25519"));
    keygen(&host_key);
    keygen(&client_key);
    let port = e2e::free_port();
    let _sshd = Sshd::start(&ssh_dir, port, &host_key, &client_key);
    // libgit2 checks the host key against $HOME/.ssh/known_hosts, as the api does.
    let home = dir.path().join("home");
    list_host_key(&home, port, &host_key);
    std::env::set_var("HOME", &home);
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();

    let seeded = dir.path().join("seed.git");
    let t = Instant::now();
    seed(&seeded, args.tenants);
    eprintln!(
        "seeded {} tenants in {:.1} s",
        args.tenants,
        t.elapsed().as_secs_f64()
    );
    println!("| variant | tenants | batch | provisions | provisions/s | p50 | p99 | build p50 / p99 | pack + push p50 / p99 | push call p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Rounds alternate the order, so that neither variant always runs on a warmer machine.
    let rounds = (0..args.rounds).flat_map(|round| {
        let order = if round % 2 == 0 {
            ["handwritten", "git2-mempack"]
        } else {
            ["git2-mempack", "handwritten"]
        };
        order.map(move |variant| (round, variant))
    });
    for (round, variant) in rounds {
        let dir = &dir.path().join(format!("round-{round}"));
        std::fs::create_dir_all(dir).unwrap();
        let remote = dir.join(format!("{variant}-remote.git"));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&seeded)
            .arg(&remote)
            .status()
            .unwrap();
        assert!(copied.success());
        let url = format!("ssh://{}@127.0.0.1:{port}{}", user.trim(), remote.display());
        let run = match variant {
            "handwritten" => handwritten(&args, &url, &client_key, dir),
            _ => mempack(&args, &url, &client_key, dir),
        };
        report(variant, &args, &run);
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&remote)
            .args(["fsck", "--connectivity-only"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{variant}: the remote does not verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
