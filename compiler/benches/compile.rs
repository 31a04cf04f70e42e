//! Compile benchmarks: one tenant's render, one tenant's change inside a repository of 100 and of 10,000
//! tenants (what the api does per request; the two must cost the same), and the whole repository at 10,000
//! generated tenants.
//! `cargo bench -p compiler --bench compile`; results in docs/BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

// The same allocator as the openclaw-compiler binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    let inputs = support::repo_inputs();
    let one = compiler::validate::tenants(&inputs.platform, &inputs.tenants[..1]).unwrap();
    c.bench_function("render one tenant", |b| {
        b.iter(|| {
            compiler::render::render_tenant(&inputs.platform, &inputs.templates, &one[0]).unwrap()
        })
    });

    let many = support::generated_tenants(10_000);
    let mut group =
        c.benchmark_group("change one tenant (validate, render, shard index, table shard)");
    for n in [100, 10_000] {
        let full = compiler::compile(&inputs.platform, &inputs.templates, &many[..n]).unwrap();
        // The same tenant in both repositories, so that only the repository's size differs.
        let changed = {
            let mut t = many[42].clone();
            t.spec = Some(
                t.spec
                    .unwrap()
                    .replace("thinking: ", "thinking: high\n    # was: "),
            );
            t
        };
        let read = |p: &str| full.files.get(p).cloned();
        group.bench_function(format!("among {n} tenants"), |b| {
            b.iter(|| {
                compiler::incremental::tenant_change(
                    &inputs.platform,
                    &inputs.templates,
                    &changed.folder,
                    Some(&changed),
                    &read,
                )
                .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("10k");
    group.sample_size(10);
    group.bench_function("compile 10,000 tenants", |b| {
        b.iter(|| compiler::compile(&inputs.platform, &inputs.templates, &many).unwrap())
    });
    group.finish();
}

criterion_group!(compile, benches);
criterion_main!(compile);
