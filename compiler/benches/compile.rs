//! Compile benchmarks: one tenant, and the whole repository at 10,000 generated tenants.
//! `cargo bench -p compiler --bench compile`; results in docs/BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    let inputs = support::repo_inputs();
    let one = compiler::validate::tenants(&inputs.platform, &inputs.tenants[..1]).unwrap();
    c.bench_function("render one tenant", |b| {
        b.iter(|| {
            compiler::render::render_tenant(&inputs.platform, &inputs.templates, &one[0]).unwrap()
        })
    });
    let files = support::generated_tenants(1);
    c.bench_function("validate and render one tenant", |b| {
        b.iter(|| compiler::compile(&inputs.platform, &inputs.templates, &files).unwrap())
    });
    let many = support::generated_tenants(10_000);
    let mut group = c.benchmark_group("10k");
    group.sample_size(10);
    group.bench_function("compile 10,000 tenants", |b| {
        b.iter(|| compiler::compile(&inputs.platform, &inputs.templates, &many).unwrap())
    });
    group.finish();
}

criterion_group!(compile, benches);
criterion_main!(compile);
