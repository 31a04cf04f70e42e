//! `openclaw-compiler`: the command-line shell over the compiler library.

mod cli_secrets;
mod commands;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "openclaw-compiler",
    version,
    about = "Compile tenant specs into Flux-ready manifests"
)]
struct Cli {
    /// The repository root (holding tenants/, templates/ and flux/).
    #[arg(long, global = true, default_value = ".", env = "OPENCLAW_REPO")]
    repo: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render every tenant into flux/, removing the output of deleted tenants.
    Build {
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Exit 1 with a list of differences when flux/ is not exactly what the specs produce.
    Check,
    /// Show a unified diff of the rendered output against flux/ in the working tree or at a git revision.
    Diff {
        /// Compare against flux/ as committed at this revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
        /// When to colour the output.
        #[arg(long, value_enum, default_value_t = commands::Color::Auto)]
        color: commands::Color,
    },
    /// Check the specs, secrets files and platform config without rendering.
    Validate,
    /// Print the JSON Schema of tenant.yaml (as committed at tenants/tenant.schema.json).
    Schema,
    /// Print where a tenant's files live: its shard, spec, secrets and generated output.
    Path {
        /// The tenant's name.
        tenant: String,
    },
    /// Create, read, re-key and check tenants' SOPS-encrypted secrets files (docs/secrets.md).
    Secrets {
        #[command(subcommand)]
        command: cli_secrets::SecretsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { jobs } => commands::build(&cli.repo, jobs),
        Command::Check => commands::check(&cli.repo),
        Command::Diff { rev, color } => commands::diff(&cli.repo, rev.as_deref(), color),
        Command::Validate => commands::validate(&cli.repo),
        Command::Schema => {
            print!("{}", compiler::spec::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Path { tenant } => commands::path(&tenant),
        Command::Secrets { command } => {
            cli_secrets::run(command, &cli.repo).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
