//! SOPS benchmarks: a typical tenant secrets file (3 values, 2 recipients) encrypted,
//! decrypted, verified without keys and re-wrapped. The target for encryption is 2 ms.
//!
//! Run: `cargo bench -p compiler --bench sops`; numbers in docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::hint::black_box;

use age::secrecy::ExposeSecret;
use compiler::sops;
use criterion::{criterion_group, criterion_main, Criterion};

fn tenant_values() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "telegram-bot-token".to_owned(),
            "7711223344:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw".to_owned(),
        ),
        (
            "proxy-token".to_owned(),
            "pt_4f9a0c2d8e7b6a5f4e3d2c1b0a9f8e7d".to_owned(),
        ),
        (
            "gateway-token".to_owned(),
            "gw_0a1b2c3d4e5f60718293a4b5c6d7e8f9".to_owned(),
        ),
    ])
}

fn bench(c: &mut Criterion) {
    let ids = [
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
    ];
    let recipients: Vec<String> = ids.iter().map(|i| i.to_public().to_string()).collect();
    let identity = ids[0].to_string().expose_secret().to_owned();
    let values = tenant_values();
    let file = sops::tenant_secret_file(
        sops::TENANT_SECRET_NAME,
        "customer-acme",
        &values,
        &recipients,
    )
    .unwrap();

    let mut group = c.benchmark_group("sops tenant secret (3 values, 2 recipients)");
    group.bench_function("encrypt", |b| {
        b.iter(|| {
            sops::tenant_secret_file(
                black_box(sops::TENANT_SECRET_NAME),
                black_box("customer-acme"),
                black_box(&values),
                black_box(&recipients),
            )
            .unwrap()
        })
    });
    group.bench_function("decrypt + MAC check", |b| {
        b.iter(|| sops::decrypt(black_box(&file), black_box(&identity)).unwrap())
    });
    group.bench_function("verify without keys", |b| {
        b.iter(|| {
            sops::verify_without_keys(
                black_box(&file),
                sops::TENANT_SECRET_NAME,
                "customer-acme",
                &recipients,
            )
            .unwrap()
        })
    });
    group.bench_function("rotate recipients", |b| {
        b.iter(|| sops::rotate_recipients(black_box(&file), &identity, &recipients).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
