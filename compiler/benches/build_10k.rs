//! The full `build` at scale, as the CLI runs it: read 10,000 generated tenants from a working tree, compile,
//! write flux/. Prints wall time per phase and the process's peak resident memory.
//! `cargo bench -p compiler --bench build_10k`; results in docs/BENCHMARKS.md.

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

fn main() {
    let n: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // In the target folder rather than /tmp: the repository a build writes to lives on the project disk.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    support::write_repo(dir.path(), &support::generated_tenants(n));
    let rss_before = peak_rss_mib();
    for round in ["cold (writes every file)", "warm (nothing changed)"] {
        let start = Instant::now();
        let inputs = compiler::source::from_dir(dir.path()).expect("valid inputs");
        let read = start.elapsed();
        let output = compiler::compile(&inputs.platform, &inputs.templates, &inputs.tenants)
            .expect("compiles");
        let compiled = start.elapsed();
        let stats = compiler::sink::write(dir.path(), &output, || {}).expect("writes");
        let total = start.elapsed();
        println!(
            "build {n} tenants, {round}: read {:.0} ms, compile {:.0} ms, write {:.0} ms, total {:.0} ms; {} files ({} written)",
            read.as_secs_f64() * 1e3,
            (compiled - read).as_secs_f64() * 1e3,
            (total - compiled).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            output.files.len(),
            stats.written
        );
    }
    println!(
        "peak resident memory: {:.0} MiB (after generating inputs: {:.0} MiB)",
        peak_rss_mib(),
        rss_before
    );
}
