//! What the api's benchmarks share: generated tenants, the database of a run, percentiles.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use compiler::spec::{
    Agent, Email, Language, Metadata, Owner, ProxyToken, Spec, TelegramId, TenantName, TenantSpec,
    TenantState, Thinking, TierName, TokenSha256,
};

/// The spec of generated tenant number `i`.
pub fn spec(name: &str, i: usize, tier: &str) -> TenantSpec {
    TenantSpec {
        api_version: compiler::spec::API_VERSION.into(),
        kind: compiler::spec::KIND.into(),
        metadata: Metadata {
            name: TenantName::parse(name).unwrap(),
            uid: None,
        },
        spec: Spec {
            owner: Owner {
                email: Email::parse(format!("{name}@example.com")).unwrap(),
                telegram_user_id: TelegramId::parse(1000 + i as i64).unwrap(),
            },
            tier: TierName::parse(tier).unwrap(),
            state: TenantState::Active,
            suspended_by: None,
            agent: Agent {
                model: compiler::spec::ModelRef::parse("kimi/kimi-for-coding").unwrap(),
                thinking: Thinking::Medium,
                language: Language::parse("en").unwrap(),
                allow_from: vec![TelegramId::parse(1000 + i as i64).unwrap()],
            },
            connections: Vec::new(),
            proxy_token: ProxyToken {
                sha256: TokenSha256::of_token(&format!("proxy-{name}")),
            },
            overrides: Default::default(),
        },
    }
}

/// Specs and encrypted secrets for `n` tenants named `<prefix>-00000`..., with the tier `tier(i)`,
/// made on every core.
pub fn tenants(
    n: usize,
    prefix: &str,
    tier: fn(usize) -> &'static str,
    recipient: &str,
) -> Vec<compiler::TenantFiles> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let recipient = recipient.to_owned();
            let prefix = prefix.to_owned();
            std::thread::spawn(move || {
                (0..n)
                    .filter(|i| i % threads == t)
                    .map(|i| {
                        let name = format!("{prefix}-{i:05}");
                        let values = BTreeMap::from([
                            (
                                "telegram-bot-token".to_owned(),
                                format!("{}:AAH{}", 100_000 + i, "x".repeat(32)),
                            ),
                            ("proxy-token".to_owned(), format!("proxy-{name}")),
                            ("gateway-token".to_owned(), format!("gateway-{name}")),
                        ]);
                        let secrets = compiler::sops::tenant_secret_file(
                            compiler::sops::TENANT_SECRET_NAME,
                            &format!("customer-{name}"),
                            &values,
                            std::slice::from_ref(&recipient),
                        )
                        .unwrap();
                        compiler::TenantFiles {
                            folder: name.clone(),
                            spec: Some(spec(&name, i, tier(i)).to_yaml()),
                            secrets: Some(secrets),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_by(|a, b| a.folder.cmp(&b.folder));
    all
}

pub fn postgres_admin() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database for the run: a SQLite file in `dir`, or a new PostgreSQL database.
pub async fn database(backend: &str, dir: &Path) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}?mode=rwc", dir.join("api.db").display()),
        "postgres" => {
            use sqlx::Connection;
            let admin = postgres_admin();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL for --backend postgres");
            let name = format!("bench_{}", hex::encode(rand::random::<[u8; 6]>()));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
        other => panic!("--backend sqlite|postgres, not {other}"),
    }
}

/// Drops the database a PostgreSQL run created.
pub async fn drop_database(backend: &str, url: &str) {
    use sqlx::Connection;
    if backend != "postgres" {
        return;
    }
    let name = url
        .rsplit_once('/')
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default();
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// The `p` quantile of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
