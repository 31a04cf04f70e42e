//! The platform bot end to end: the real api (SQLite, PostgreSQL) with a Telegram Bot API
//! stand-in speaking Telegram's formats. A customer signs up from `/start` to a committed
//! tenant in Brazilian Portuguese with the api restarted mid-conversation; the same update
//! delivered twice is processed once; tokens never reach git or the database in plaintext; a
//! token pasted in a group is neither used nor stored; wrong secrets get 401; Telegram's 429 and
//! 5xx lose and repeat nothing; two api processes sharing one database run one conversation.

use std::time::Duration;

use api::config::BotConfig;
use e2e::bot_api::{callback, group_message, message, post_update, BotApiStandIn, Failure};
use e2e::{bot_token, Backend, Options, Platform};
use reqwest::StatusCode;

const USER: i64 = 5_550_001;

/// Starts a platform with the platform bot configured against a Bot API stand-in; the webhook
/// secret.
async fn with_bot(backend: Backend) -> Option<(Platform, BotApiStandIn, String)> {
    let mut p = Platform::start(backend, Options::default()).await?;
    let token = format!("888000:AAB{}", hex::encode(rand::random::<[u8; 16]>()));
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let api = BotApiStandIn::start(&token).await;
    std::fs::write(
        p.dir.path().join("platform-bot-token"),
        format!("{token}\n"),
    )
    .unwrap();
    std::fs::write(p.dir.path().join("webhook-secret"), &secret).unwrap();
    p.config.bot = BotConfig {
        token_path: Some(p.dir.path().join("platform-bot-token")),
        webhook_secret_path: Some(p.dir.path().join("webhook-secret")),
        public_url: Some("https://api.example.test".into()),
        set_webhook: true,
        api_base_url: api.url.clone(),
        timeout_seconds: 5,
    };
    p.config.check().unwrap();
    p.restart().await;
    Some((p, api, secret))
}

async fn send(p: &Platform, secret: &str, update: serde_json::Value) {
    let status = post_update(&p.http, &p.base, Some(secret), &update).await;
    assert_eq!(status, StatusCode::OK, "the webhook acknowledges {update}");
}

/// Every byte of the SQLite database files, to look for plaintext.
fn sqlite_bytes(p: &Platform) -> Vec<u8> {
    let mut all = Vec::new();
    for file in ["api.db", "api.db-wal"] {
        if let Ok(bytes) = std::fs::read(p.dir.path().join(file)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Waits until the last message to `chat` offers a button with `data`.
async fn wait_button(api: &BotApiStandIn, chat: i64, data: &str) {
    for _ in 0..300 {
        if api.last_buttons(chat).iter().any(|b| b == data) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no button {data:?} for chat {chat}; messages: {:?}",
        api.texts_to(chat)
    );
}

#[tokio::test]
async fn onboarding_in_portuguese_across_a_restart() {
    let Some((mut p, api, secret)) = with_bot(Backend::Sqlite).await else {
        return;
    };
    // setWebhook at start, with the secret and the update kinds the bot reads.
    for _ in 0..100 {
        if api.webhook().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (url, registered, allowed) = api.webhook().expect("setWebhook was called");
    assert_eq!(url, "https://api.example.test/telegram/webhook");
    assert_eq!(registered, secret);
    assert_eq!(allowed, serde_json::json!(["message", "callback_query"]));

    // Wrong or missing secret: 401, nothing stored or answered.
    assert_eq!(
        post_update(&p.http, &p.base, Some("wrong"), &message(1, USER, "/start")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_update(&p.http, &p.base, None, &message(1, USER, "/start")).await,
        StatusCode::UNAUTHORIZED
    );
    // Malformed updates are acknowledged and dropped.
    let malformed = serde_json::json!({"update_id": "one", "message": 3});
    assert_eq!(
        post_update(&p.http, &p.base, Some(&secret), &malformed).await,
        StatusCode::OK
    );

    send(&p, &secret, message(1, USER, "/start")).await;
    wait_button(&api, USER, "lang:pt-BR").await;
    send(&p, &secret, callback(2, USER, "lang:pt-BR")).await;
    let texts = api.wait_texts(USER, 2).await;
    assert!(texts[1].contains("Em uma frase"), "{texts:?}");
    send(&p, &secret, message(3, USER, "cuidar da minha agenda")).await;
    let texts = api.wait_texts(USER, 3).await;
    assert!(texts[2].contains("@BotFather"), "{texts:?}");

    // A token Telegram refuses: a clear message, and the step stays.
    let refused = bot_token(41);
    send(&p, &secret, message(4, USER, &refused)).await;
    let texts = api.wait_texts(USER, 4).await;
    assert!(texts[3].contains("recusou"), "{texts:?}");

    let token = bot_token(42);
    p.accept_token(&token);
    send(&p, &secret, message(5, USER, &format!("aqui: {token}"))).await;
    let texts = api.wait_texts(USER, 5).await;
    assert!(texts[4].contains("e-mail"), "{texts:?}");
    // An email with a control character is refused before anything is stored.
    send(&p, &secret, message(6, USER, "ada@exa\u{202e}mple.com")).await;
    let texts = api.wait_texts(USER, 6).await;
    assert!(texts[5].contains("não serve"), "{texts:?}");
    send(&p, &secret, message(7, USER, "ada@example.com")).await;
    wait_button(&api, USER, "tier:pro").await;
    let tiers = api
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.method == "sendMessage")
        .unwrap();
    assert!(
        tiers.body.to_string().contains("29 EUR/mês"),
        "prices from templates/platform.yaml: {}",
        tiers.body
    );
    send(&p, &secret, callback(8, USER, "tier:pro")).await;
    wait_button(&api, USER, "confirm:yes").await;

    // The api restarts mid-conversation: the state is in the database.
    p.restart().await;
    let head_before = p.head();
    send(&p, &secret, callback(9, USER, "confirm:yes")).await;
    let texts = api.wait_texts(USER, 10).await;
    assert!(texts[8].contains("sendo preparado"), "{texts:?}");
    assert!(texts[9].contains("diga oi para @agent_bot"), "{texts:?}");

    // A committed tenant owned by this Telegram user, with the same rules as a dashboard sign-up.
    let repo = p.remote();
    assert_ne!(p.head(), head_before);
    let spec = e2e::file_at(&repo, p.head(), &compiler::layout::spec_path("agent-bot"))
        .expect("the tenant is committed");
    let spec = compiler::spec::TenantSpec::parse("tenant.yaml", &spec).unwrap();
    assert_eq!(spec.spec.owner.telegram_user_id.get(), USER);
    assert_eq!(spec.spec.owner.email.to_string(), "ada@example.com");
    assert_eq!(spec.spec.tier.to_string(), "pro");
    assert_eq!(spec.spec.agent.language.to_string(), "pt-BR");
    let commit = repo.find_commit(p.head()).unwrap();
    assert!(commit.author().name().unwrap().starts_with("customer cus_"));
    let secret_part = token.split(':').nth(1).unwrap();
    assert!(
        e2e::objects_containing(&repo, secret_part).is_empty(),
        "no plaintext token in git"
    );

    // The same update delivered again: acknowledged, not processed again.
    send(&p, &secret, callback(9, USER, "confirm:yes")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.texts_to(USER).len(), 10, "{:?}", api.texts_to(USER));
    let callbacks = api
        .calls()
        .into_iter()
        .filter(|c| c.method == "answerCallbackQuery")
        .count();
    assert_eq!(callbacks, 3, "every button press is answered once");

    // Status, pause, resume; unknown commands get help.
    send(&p, &secret, message(10, USER, "/status")).await;
    let texts = api.wait_texts(USER, 11).await;
    assert!(texts[10].starts_with("agent-bot: active"), "{texts:?}");
    send(&p, &secret, message(11, USER, "/pause")).await;
    let texts = api.wait_texts(USER, 12).await;
    assert!(texts[11].contains("pausado"), "{texts:?}");
    send(&p, &secret, message(12, USER, "/resume")).await;
    let texts = api.wait_texts(USER, 13).await;
    assert!(texts[12].contains("funcionando"), "{texts:?}");
    send(&p, &secret, message(13, USER, "/frobnicate")).await;
    let texts = api.wait_texts(USER, 14).await;
    assert!(texts[13].contains("/status"), "{texts:?}");
    send(&p, &secret, message(14, USER, "/usage")).await;
    let texts = api.wait_texts(USER, 15).await;
    assert!(texts[14].contains("tokens"), "{texts:?}");

    // Another user cannot act on this tenant by forging a button.
    send(&p, &secret, callback(15, USER + 1, "pause:agent-bot")).await;
    let other = api.wait_texts(USER + 1, 1).await;
    assert!(!other[0].contains("agent-bot"), "{other:?}");

    // A token pasted in a group: not used, not repeated, not stored; the user is told to revoke it.
    let leaked = bot_token(43);
    p.accept_token(&leaked);
    send(
        &p,
        &secret,
        group_message(16, -1001, USER, &format!("my token {leaked}")),
    )
    .await;
    let group = api.wait_texts(-1001, 1).await;
    assert!(group[0].contains("/revoke"), "{group:?}");
    assert!(!group[0].contains(leaked.split(':').nth(1).unwrap()));
    let asked = p.telegram.asked.lock().unwrap().clone();
    assert!(!asked.contains(&leaked), "a group token is never used");

    // Neither token is in the database in plaintext (the sealed form is gone after provisioning).
    let db = sqlite_bytes(&p);
    assert!(
        !contains(&db, secret_part),
        "the customer's token is not in the database"
    );
    assert!(
        !contains(&db, leaked.split(':').nth(1).unwrap()),
        "the leaked token is not in the database"
    );
    p.finish().await;
}

#[tokio::test]
async fn telegram_429_and_5xx_lose_and_repeat_nothing() {
    let Some((p, api, secret)) = with_bot(Backend::Sqlite).await else {
        return;
    };
    api.fail_next(&[
        Failure::TooMany(1),
        Failure::Server(502),
        Failure::Server(500),
    ]);
    let started = std::time::Instant::now();
    send(&p, &secret, message(1, USER, "/help")).await;
    send(&p, &secret, message(2, USER, "/start")).await;
    let texts = api.wait_texts(USER, 2).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry_after was respected"
    );
    assert_eq!(api.refused(), 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let texts_after = api.texts_to(USER);
    assert_eq!(
        texts_after.len(),
        2,
        "each message sent once: {texts_after:?}"
    );
    assert!(texts[0].contains("/status"), "order kept: {texts:?}");
    assert!(texts[1].contains("Which language"), "order kept: {texts:?}");
    p.finish().await;
}

#[tokio::test]
async fn two_api_processes_share_one_conversation() {
    let Some((p, api, secret)) = with_bot(Backend::Postgres).await else {
        return;
    };
    let mut second = p.config.clone();
    second.repo.local_path = p.dir.path().join("api-clone-2.git");
    let other = api::app::start(second, std::future::pending())
        .await
        .unwrap();
    let base2 = format!("http://{}", other.addr);
    let bases = [p.base.clone(), base2.clone()];
    let token = bot_token(77);
    p.accept_token(&token);
    let steps = [
        message(1, USER, "/start"),
        callback(2, USER, "lang:en"),
        message(3, USER, "plan my week"),
        message(4, USER, &token),
        message(5, USER, "grace@example.com"),
        callback(6, USER, "tier:starter"),
        callback(7, USER, "confirm:yes"),
    ];
    let expected = [1, 2, 3, 4, 5, 6, 8];
    for (i, update) in steps.iter().enumerate() {
        // Telegram may deliver to either replica, and retry on the other.
        for base in &bases {
            let status = post_update(&p.http, base, Some(&secret), update).await;
            assert_eq!(status, StatusCode::OK);
        }
        api.wait_texts(USER, expected[i]).await;
        if i == 5 {
            wait_button(&api, USER, "confirm:yes").await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let texts = api.texts_to(USER);
    assert_eq!(texts.len(), 8, "nothing processed or sent twice: {texts:?}");
    assert!(texts[7].contains("say hi to @agent_bot"), "{texts:?}");
    let store = p.store().await;
    let owned = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.name.starts_with("agent-bot"))
        .count();
    assert_eq!(owned, 1, "one tenant");
    // No plaintext token in the bot's tables.
    let secret_part = token.split(':').nth(1).unwrap();
    for sql in [
        "SELECT input AS t FROM bot_updates",
        "SELECT state AS t FROM bot_chats",
        "SELECT payload AS t FROM bot_outbox",
    ] {
        let rows = sqlx::query(sql).fetch_all(store.pool()).await.unwrap();
        for row in rows {
            let text: String = sqlx::Row::get(&row, "t");
            assert!(!text.contains(secret_part), "{sql}: {text}");
        }
    }
    other.shutdown().await.unwrap();
    p.finish().await;
}

/// Everything the process logged (every level, every module), for the test that looks for
/// tokens in it. Installed once for this test binary by [`capture_logs`].
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the process, at trace level, into [`LOGS`].
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(|| LogSink)
            .init();
    });
}

#[tokio::test]
async fn tokens_never_reach_the_logs_or_the_outbox() {
    capture_logs();
    let Some((p, api, secret)) = with_bot(Backend::Sqlite).await else {
        return;
    };
    let platform_token = api.token.clone();
    let token = bot_token(91);
    p.accept_token(&token);
    let refused = bot_token(92);
    let leaked = bot_token(93);
    p.accept_token(&leaked);
    let steps = [
        message(1, USER, "/start"),
        callback(2, USER, "lang:en"),
        message(3, USER, "answer my mail"),
        message(4, USER, &refused),
        message(5, USER, &format!("here it is: {token}")),
        message(6, USER, "lin@example.com"),
        callback(7, USER, "tier:starter"),
        callback(8, USER, "confirm:yes"),
    ];
    let expected = [1, 2, 3, 4, 5, 6, 7, 9];
    for (update, n) in steps.iter().zip(expected) {
        send(&p, &secret, update.clone()).await;
        api.wait_texts(USER, n).await;
        if n == 6 {
            wait_button(&api, USER, "tier:starter").await;
        }
        if n == 7 {
            wait_button(&api, USER, "confirm:yes").await;
        }
    }
    let texts = api.texts_to(USER);
    assert!(texts[8].contains("say hi to @agent_bot"), "{texts:?}");
    // A token pasted in a group, and a forged post with a wrong secret.
    send(
        &p,
        &secret,
        group_message(9, -1002, USER, &format!("oops {leaked}")),
    )
    .await;
    api.wait_texts(-1002, 1).await;
    let wrong = format!("{secret}x");
    assert_eq!(
        post_update(&p.http, &p.base, Some(&wrong), &message(10, USER, &token)).await,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.contains("platform bot: webhook registered"),
        "the api's logs were captured ({} bytes)",
        logs.len()
    );
    let secret_of = |t: &str| t.split(':').nth(1).unwrap().to_owned();
    for (what, needle) in [
        ("the platform bot's token", secret_of(&platform_token)),
        ("the customer's token", secret_of(&token)),
        ("a token Telegram refused", secret_of(&refused)),
        ("a token pasted in a group", secret_of(&leaked)),
        ("the webhook secret", secret.clone()),
    ] {
        assert!(!logs.contains(&needle), "{what} is in the logs");
    }
    // Nor in the outbox's stored calls (nor the other tables), in plaintext.
    let store = p.store().await;
    for sql in [
        "SELECT payload AS t FROM bot_outbox",
        "SELECT input AS t FROM bot_updates",
        "SELECT state AS t FROM bot_chats",
    ] {
        let rows = sqlx::query(sql).fetch_all(store.pool()).await.unwrap();
        assert!(!rows.is_empty(), "{sql} holds rows");
        for row in rows {
            let text: String = sqlx::Row::get(&row, "t");
            for t in [&token, &refused, &leaked, &platform_token] {
                assert!(!text.contains(&secret_of(t)), "{sql}: {text}");
            }
        }
    }
    p.finish().await;
}

/// Two replicas' notifiers (and a conversation) race to queue the same "live" notice on one
/// database: the notice key is inserted once, in the transaction that queues the message, so
/// exactly one message is stored whoever wins.
async fn the_live_notice_is_queued_once_in_a_race(backend: Backend) {
    use api::bot::conversation::Chat;
    use api::bot::db::{BotDb, OutMsg};
    use api::bot::update::{Input, Kind};

    let dir = tempfile::tempdir().unwrap();
    let Some(url) = e2e::database_url(backend, dir.path()).await else {
        return;
    };
    let sqlite = url.starts_with("sqlite:");
    // Two replicas: two connection pools (two write queues on SQLite) on one database.
    let one = BotDb::new(api::store::Store::connect(&url, 4).await.unwrap(), sqlite);
    let two = BotDb::new(api::store::Store::connect(&url, 4).await.unwrap(), sqlite);
    let message = |id: String, chat: i64, once: Option<String>| OutMsg {
        id,
        chat_id: chat,
        method: "sendMessage".into(),
        payload: serde_json::json!({"chat_id": chat, "text": "your agent is live"}),
        once,
    };
    let rounds = 40;
    for i in 0..rounds {
        let chat = 7_000 + i;
        let key = api::bot::live_key(&format!("tenant-{i}"), &format!("uid-{i}"));
        let notice = |db: &BotDb| {
            let (db, key) = (db.clone(), key.clone());
            async move {
                db.notice(&key, &[message(format!("n-{key}"), chat, None)], 1)
                    .await
                    .unwrap()
            }
        };
        if i % 2 == 0 {
            // Two notifiers.
            let (a, b) = tokio::join!(notice(&one), notice(&two));
            assert!(a ^ b, "round {i}: exactly one notifier queues the notice");
        } else {
            // A notifier and the conversation's own "live" reply under the same key.
            let input = Input {
                update_id: 100 + i,
                chat_id: chat,
                user_id: chat,
                private: true,
                first_name: "Ada".into(),
                language_code: None,
                kind: Kind::Command {
                    name: "start".into(),
                    arg: String::new(),
                },
            };
            assert!(one
                .lease_chat(chat, "replica-1", 1, i64::MAX)
                .await
                .unwrap());
            let replies = [message(format!("u{i}-001"), chat, Some(key.clone()))];
            let state = Chat::default();
            let (done, _) = tokio::join!(
                one.finish_update("replica-1", &input, &state, &replies, 1),
                notice(&two)
            );
            assert!(done.unwrap());
        }
    }
    let rows = sqlx::query("SELECT chat_id FROM bot_outbox")
        .fetch_all(one.store().pool())
        .await
        .unwrap();
    let mut chats: Vec<i64> = rows.iter().map(|r| sqlx::Row::get(r, "chat_id")).collect();
    chats.sort();
    let expected: Vec<i64> = (0..rounds).map(|i| 7_000 + i).collect();
    assert_eq!(chats, expected, "one live message per tenant, never two");
    if !sqlite {
        e2e::drop_postgres(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_notice_is_queued_once_in_a_race_on_sqlite() {
    the_live_notice_is_queued_once_in_a_race(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_notice_is_queued_once_in_a_race_on_postgres() {
    the_live_notice_is_queued_once_in_a_race(Backend::Postgres).await;
}

/// Texts to `chat` that contain `needle`, waiting until there are `n` of them.
async fn wait_text_with(api: &BotApiStandIn, chat: i64, needle: &str, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let found: Vec<String> = api
            .texts_to(chat)
            .into_iter()
            .filter(|t| t.contains(needle))
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "chat {chat} has no {n} messages with {needle:?}: {:?}",
        api.texts_to(chat)
    );
}

/// The owner (Telegram id 4242 in `Platform::provision_body`) hears that an admin suspended and
/// reactivated the agent, and by whom; their own pause and resume are not announced.
#[tokio::test]
async fn owners_hear_who_suspended_and_who_reactivated() {
    let Some((p, api, _secret)) = with_bot(Backend::Sqlite).await else {
        return;
    };
    const OWNER: i64 = 4242;
    let (status, body, _) = p.provision("told-bot").await;
    assert!(status.is_success(), "{body}");
    wait_text_with(&api, OWNER, "told-bot is live", 1).await;
    let (status, body) = p
        .call(
            reqwest::Method::POST,
            "/v1/tenants/told-bot/suspend",
            Some(serde_json::json!({"reason": "abuse report"})),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    let suspended = wait_text_with(&api, OWNER, "was suspended by", 1).await;
    assert!(
        suspended[0].contains("by the platform's support team"),
        "{suspended:?}"
    );
    let (status, body) = p
        .call(
            reqwest::Method::POST,
            "/v1/tenants/told-bot/reactivate",
            Some(serde_json::json!({"reason": "cleared"})),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    let reactivated = wait_text_with(&api, OWNER, "active again", 1).await;
    assert!(
        reactivated[0].contains("reactivated by the platform's support team"),
        "{reactivated:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let texts = api.texts_to(OWNER);
    assert_eq!(
        texts.len(),
        3,
        "live, suspended, reactivated, once each: {texts:?}"
    );
    p.finish().await;
}

/// An SRE adds a connection to a tenant's spec and later removes it (commits on the state repo,
/// rendered by the compiler as CI requires): the owner hears of each change once.
#[tokio::test]
async fn owners_hear_of_connections_added_and_removed() {
    let Some((p, api, _secret)) = with_bot(Backend::Sqlite).await else {
        return;
    };
    const OWNER: i64 = 4242;
    let (status, body, _) = p.provision("linked-bot").await;
    assert!(status.is_success(), "{body}");
    wait_text_with(&api, OWNER, "linked-bot is live", 1).await;

    let work = p.dir.path().join("sre-work");
    let out = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(p.remote_path())
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let compiler = e2e::workspace_binary("compiler", "openclaw-compiler");
    let spec_path = work.join(compiler::layout::spec_path("linked-bot"));
    let original = std::fs::read_to_string(&spec_path).unwrap();
    assert!(!original.contains("connections:"), "{original}");
    let commit = |text: &str, message: &str| {
        std::fs::write(&spec_path, text).unwrap();
        let built = std::process::Command::new(&compiler)
            .arg("--repo")
            .arg(&work)
            .arg("build")
            .output()
            .unwrap();
        assert!(built.status.success(), "{built:?}");
        for args in [
            &["add", "-A"][..],
            &["commit", "-qm", message][..],
            &["push", "-q", "origin", "HEAD:main"][..],
        ] {
            let out = e2e::sre_git(&work, args);
            assert!(out.status.success(), "{out:?}");
        }
    };
    let connected = original.replacen(
        "\n  proxyToken:",
        "\n  connections:\n  - provider: github\n    connectionId: 0b6c3a9e-1f2d-4c5b-8a7e-112233445566\n  proxyToken:",
        1,
    );
    assert_ne!(
        connected, original,
        "the spec has a proxyToken line: {original}"
    );
    commit(&connected, "connect linked-bot to GitHub");
    let added = wait_text_with(&api, OWNER, "connected to GitHub", 1).await;
    assert!(
        added[0].contains("linked-bot is now connected to GitHub"),
        "{added:?}"
    );

    commit(&original, "disconnect linked-bot from GitHub");
    wait_text_with(&api, OWNER, "no longer connected to GitHub", 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let texts = api.texts_to(OWNER);
    assert_eq!(texts.len(), 3, "live, added, removed, once each: {texts:?}");
    p.finish().await;
}

/// The webhook's group commit: a batch is one statement; an update delivered twice within a batch
/// or across batches is stored once and answered as a duplicate after the first.
async fn a_batch_stores_each_update_once(backend: Backend) {
    use api::bot::db::BotDb;
    use api::bot::update::{Input, Kind};

    let dir = tempfile::tempdir().unwrap();
    let Some(url) = e2e::database_url(backend, dir.path()).await else {
        return;
    };
    let db = BotDb::new(
        api::store::Store::connect(&url, 2).await.unwrap(),
        url.starts_with("sqlite:"),
    );
    let input = |update_id: i64| Input {
        update_id,
        chat_id: 9,
        user_id: 9,
        private: true,
        first_name: "Ada".into(),
        language_code: None,
        kind: Kind::Command {
            name: "help".into(),
            arg: String::new(),
        },
    };
    let (a, b, c) = (input(1), input(2), input(3));
    let fresh = db.insert_updates(&[&a, &b, &a, &a], 1).await.unwrap();
    assert_eq!(fresh, [true, true, false, false]);
    let fresh = db.insert_updates(&[&b, &c, &c], 2).await.unwrap();
    assert_eq!(fresh, [false, true, false]);
    let pending = db.pending_updates(9).await.unwrap();
    assert_eq!(pending, [a, b, c], "each stored once, in order");
    if !url.starts_with("sqlite:") {
        e2e::drop_postgres(&url).await;
    }
}

#[tokio::test]
async fn a_batch_stores_each_update_once_on_sqlite() {
    a_batch_stores_each_update_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_batch_stores_each_update_once_on_postgres() {
    a_batch_stores_each_update_once(Backend::Postgres).await;
}
