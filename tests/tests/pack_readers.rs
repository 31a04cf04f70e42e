//! Readers of the state repo beside the api's pack maintenance: the real git CLI clones (over
//! git's own protocol, `--no-local`, as from a git host) and fetches the remote in a loop while the
//! api provisions hundreds of tenants with a small `repo.max_packs`, rolls packs up, and shuts
//! down. Every clone and fetch must succeed, `git fsck` must be clean, and neither pack folder may
//! ever hold more packs than the bound.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{git_fsck, Backend, Options, Platform};
use reqwest::StatusCode;

const GIT: &str = "/usr/bin/git";
const TENANTS: usize = 200;
const CLIENTS: usize = 16;
const MAX_PACKS: usize = 16;

fn git(args: &[&str], dir: Option<&Path>) -> Result<(), String> {
    let mut command = Command::new(GIT);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("git {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bare clone over git's own protocol (`--no-local`: no copy of the files, as from a git host).
fn clone(url: &str, dest: &Path) -> Result<(), String> {
    git(
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            url,
            &dest.to_string_lossy(),
        ],
        None,
    )
}

fn pack_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects/pack"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("pack-") && name.ends_with(".pack")
                })
                .count()
        })
        .unwrap_or(0)
}

/// What the readers saw.
#[derive(Default)]
struct Seen {
    clones: AtomicUsize,
    fetches: AtomicUsize,
    failures: Mutex<Vec<String>>,
    most_packs: AtomicUsize,
}

fn spawn_readers(
    remote: PathBuf,
    api_clone: PathBuf,
    work: PathBuf,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<std::thread::JoinHandle<()>> {
    let url = format!("file://{}", remote.display());
    let mut threads = Vec::new();
    // Clones from scratch, one after the other.
    for reader in 0..2 {
        let (url, work, stop, seen) = (url.clone(), work.clone(), stop.clone(), seen.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let dest = work.join(format!("clone-{reader}-{n}"));
                match clone(&url, &dest) {
                    Ok(()) => {
                        seen.clones.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => seen.failures.lock().unwrap().push(e),
                }
                let _ = std::fs::remove_dir_all(&dest);
                n += 1;
            }
        }));
    }
    // One clone kept up to date by fetching.
    {
        let (url, work, stop, seen) = (url.clone(), work.clone(), stop.clone(), seen.clone());
        threads.push(std::thread::spawn(move || {
            let dest = work.join("fetcher.git");
            clone(&url, &dest).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match git(
                    &["fetch", "-q", &url, "+refs/heads/*:refs/heads/*"],
                    Some(&dest),
                ) {
                    Ok(()) => {
                        seen.fetches.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => seen.failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    // The pack folders, watched as closely as the machine allows.
    {
        let (stop, seen) = (stop.clone(), seen.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let most = pack_count(&remote).max(pack_count(&api_clone));
                seen.most_packs.fetch_max(most, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }
    threads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_and_fetches_succeed_while_the_api_provisions_and_shuts_down() {
    if !e2e::require("git at /usr/bin/git", Path::new(GIT).is_file()) {
        return;
    }
    let options = Options {
        max_packs: MAX_PACKS,
        max_tenants_per_customer: TENANTS as u32,
        customer_writes_per_minute: 100_000,
        ..Options::default()
    };
    let Some(p) = Platform::start(Backend::Sqlite, options).await else {
        return;
    };
    let started = Instant::now();
    let remote = p.remote_path();
    let api_clone = p.config.repo.local_path.clone();
    let work = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let readers = spawn_readers(
        remote.clone(),
        api_clone.clone(),
        work.path().to_path_buf(),
        stop.clone(),
        seen.clone(),
    );

    let p = Arc::new(p);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (p, next) = (p.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TENANTS {
                    return;
                }
                let (status, body, _) = p.provision(&format!("reader-{i}")).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let head = p.head();
    // The shutdown waits for the rollup in flight and removes what it replaced while the
    // readers go on.
    let mut p = Arc::into_inner(p).expect("no client holds the platform any more");
    // The readers go on after the platform is gone: its folder must stay.
    let _repos = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    p.finish().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }

    let failures = seen.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} clones and fetches failed: {failures:#?}",
        failures.len(),
        failures.len() + seen.clones.load(Ordering::Relaxed) + seen.fetches.load(Ordering::Relaxed)
    );
    let (clones, fetches) = (
        seen.clones.load(Ordering::Relaxed),
        seen.fetches.load(Ordering::Relaxed),
    );
    assert!(
        clones >= 4 && fetches >= 4,
        "the readers ran beside the api: {clones} clones, {fetches} fetches"
    );
    let most = seen.most_packs.load(Ordering::Relaxed);
    assert!(
        most <= MAX_PACKS,
        "a pack folder held {most} packs; repo.max_packs is {MAX_PACKS}"
    );
    for repo in [&remote, &api_clone] {
        let packs = pack_count(repo);
        assert!(
            packs <= MAX_PACKS,
            "{} holds {packs} packs after the shutdown",
            repo.display()
        );
        git_fsck(repo).unwrap_or_else(|e| panic!("git fsck {}: {e}", repo.display()));
    }
    // The kept clone fetched the last commit, complete.
    let fetcher = work.path().join("fetcher.git");
    git(
        &[
            "fetch",
            "-q",
            &format!("file://{}", remote.display()),
            "+refs/heads/*:refs/heads/*",
        ],
        Some(&fetcher),
    )
    .unwrap();
    let tip = Command::new(GIT)
        .args(["rev-parse", "refs/heads/main"])
        .current_dir(&fetcher)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tip.stdout).trim(),
        head.to_string()
    );
    git_fsck(&fetcher).unwrap();
    eprintln!(
        "{TENANTS} provisions, {clones} clones, {fetches} fetches, at most {most} packs, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
