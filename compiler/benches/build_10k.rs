//! The full `build` at scale, as the CLI runs it: read 10,000 generated tenants from a working tree, compile,
//! write flux/. Prints wall time per phase and the process's peak resident memory.
//! `cargo bench -p compiler --bench build_10k` (TENANTS=N for another count, BUILD_DIR=/dev/shm for a tmpfs);
//! results in docs/BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

// The same allocator as the openclaw-compiler binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User plus system CPU time of this process so far, from /proc/self/stat (in clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces); utime and stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let n: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // In the target folder by default: the repository a build writes to lives on the project disk. BUILD_DIR
    // puts it elsewhere (a tmpfs such as /dev/shm measures the compiler without the file system).
    let parent =
        std::env::var("BUILD_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    let dir = tempfile::tempdir_in(&parent).expect("temp dir");
    println!("repository in {}", dir.path().display());
    support::write_repo(dir.path(), &support::generated_tenants(n));
    let rss_before = peak_rss_mib();
    for round in ["cold (writes every file)", "warm (nothing changed)"] {
        let cpu_start = cpu_seconds();
        let start = Instant::now();
        let inputs = compiler::source::from_dir(dir.path()).expect("valid inputs");
        let read = start.elapsed();
        // What `openclaw-compiler build` does: render, compare each file with the tree's as it is rendered,
        // keep only what differs, then write that.
        let existing = compiler::sink::generated_paths(dir.path()).expect("walks flux/");
        let unchanged = |path: &str, contents: &str| {
            compiler::sink::unchanged_on_disk(dir.path(), &existing, path, contents)
        };
        let changes = compiler::compile_changes(
            &inputs.platform,
            &inputs.templates,
            &inputs.tenants,
            &unchanged,
        )
        .expect("compiles");
        let compiled = start.elapsed();
        let stats =
            compiler::sink::write_changes(dir.path(), &changes, &existing, || {}).expect("writes");
        let total = start.elapsed();
        println!(
            "build {n} tenants, {round}: read {:.0} ms, compile and compare {:.0} ms, write {:.0} ms, total {:.0} ms (CPU {:.2} s); {} files ({} written)",
            read.as_secs_f64() * 1e3,
            (compiled - read).as_secs_f64() * 1e3,
            (total - compiled).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            cpu_seconds() - cpu_start,
            changes.paths.len(),
            stats.written
        );
    }
    println!(
        "peak resident memory: {:.0} MiB (after generating inputs: {:.0} MiB)",
        peak_rss_mib(),
        rss_before
    );
}
