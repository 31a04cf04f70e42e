//! `openclaw-api`: the binary edge. Parses arguments, sets up logging, and runs the api (`serve`)
//! or the one-command local platform (`dev`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use api::app;
use api::config::Config;
use api::dev::{self, DevPaths};
use api::dev_proxy;
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "openclaw-api",
    version,
    about = "openclaw-cloud's api: tenant lifecycle as GitOps commits"
)]
struct Cli {
    /// Log as JSON lines (default: human-readable).
    #[arg(long, global = true, env = "OPENCLAW_API_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the api with a configuration file and OPENCLAW_API_* environment variables.
    Serve {
        #[arg(long, env = "OPENCLAW_API_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the whole platform locally: SQLite, a seeded bare state repo, dev keys (see docs/api.md).
    Dev {
        /// Folder for the database, the state repo, the age key and the admin token.
        #[arg(long, default_value = ".dev")]
        data_dir: PathBuf,
        /// The checkout whose templates/ and flux/ seed the state repo.
        #[arg(long, default_value = ".")]
        checkout: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Verify bot tokens with getMe at this Bot API stand-in. Without it, dev mode checks the
        /// token's format only (and says so).
        #[arg(long)]
        telegram_base_url: Option<String>,
        /// Turn off the dev login (sign-in by Telegram id without Telegram). It is on by default
        /// and refused on a non-loopback --listen address.
        #[arg(long)]
        no_dev_login: bool,
        /// Where the token proxy listens (fed from the state repo's tenant table).
        #[arg(long, default_value = "127.0.0.1:8081")]
        proxy_listen: std::net::SocketAddr,
        /// An OpenAI-compatible server the proxy forwards /v1/chat/completions to, e.g.
        /// http://127.0.0.1:11434 (the proxy appends /v1/...).
        #[arg(long)]
        openai_base_url: Option<String>,
        /// An Anthropic-compatible server the proxy forwards /v1/messages to.
        #[arg(long)]
        anthropic_base_url: Option<String>,
        /// The key the proxy sends upstream in place of tenants' tokens.
        #[arg(
            long,
            env = "OPENCLAW_DEV_UPSTREAM_API_KEY",
            default_value = "dev-upstream-key",
            hide_env_values = true
        )]
        upstream_api_key: String,
    },
    /// Print the SHA-256 of a token read from standard input (for `admin_tokens` in the config).
    HashToken,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            println!(
                "{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                    token.trim().as_bytes()
                ))
            );
            Ok(())
        }
        Command::Serve { config } => {
            init_logging(cli.log_json);
            let config = Config::load(config.as_deref())?;
            let running = app::start(config, app::shutdown_signal()).await?;
            running.wait().await?;
            Ok(())
        }
        Command::Dev {
            data_dir,
            checkout,
            listen,
            telegram_base_url,
            no_dev_login,
            proxy_listen,
            openai_base_url,
            anthropic_base_url,
            upstream_api_key,
        } => {
            init_logging(cli.log_json);
            let paths = DevPaths { root: data_dir };
            let (token, recipient) =
                dev::prepare(&paths, &checkout).context("preparing the dev data folder")?;
            let mut config = dev::config(&paths, &token, telegram_base_url.as_deref(), listen);
            config.auth.dev_login = !no_dev_login;
            config.check()?;
            let running = app::start(config.clone(), app::shutdown_signal()).await?;
            let proxy_options = dev_proxy::DevProxyOptions {
                listen: proxy_listen,
                openai_base_url,
                anthropic_base_url,
                upstream_api_key,
            };
            let proxy = dev_proxy::start(&paths, &config.repo.branch, running.addr, &proxy_options)
                .await
                .context("starting the dev token proxy")?;
            let mut shown = config.clone();
            shown.listen = running.addr;
            println!("{}", dev::banner(&paths, &shown, &token, &recipient));
            println!(
                "{}",
                dev_proxy::banner(&paths, running.addr, proxy.addr, &proxy_options)
            );
            running.wait().await?;
            Ok(())
        }
    }
}
