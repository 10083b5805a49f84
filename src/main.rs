//! The `portcullis` command: run the gateway or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portcullis, an API gateway on Pingora.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run` command).
    #[arg(short, long, global = true, default_value = "conf/quickstart.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate a config file: print every problem and exit 1, or a summary and exit 0.
    Check,
    /// Manage API keys in the configured store.
    #[command(subcommand)]
    Keys(Keys),
}

#[derive(Subcommand)]
enum Keys {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        /// Consumer the key authenticates.
        #[arg(long)]
        consumer: String,
        /// Plan name.
        #[arg(long)]
        plan: Option<String>,
        /// A scope to grant (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A name=value label (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Lifetime, e.g. "30d" (default: [auth.api_key] key_ttl).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List a consumer's keys (ids and metadata, never the keys).
    List {
        /// Consumer id.
        #[arg(long)]
        consumer: String,
    },
    /// Revoke a key by id, on every gateway node.
    Revoke {
        /// Key id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    portcullis::observe::init_process_log();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => run(&cli.config),
        Command::Keys(k) => keys(&cli.config, k),
    }
}

fn keys(path: &std::path::Path, command: Keys) -> ExitCode {
    use portcullis::cli_keys::KeysCommand;
    let command = match command {
        Keys::Create {
            consumer,
            plan,
            scopes,
            labels,
            ttl,
        } => KeysCommand::Create {
            consumer,
            plan,
            scopes,
            labels,
            ttl,
        },
        Keys::List { consumer } => KeysCommand::List { consumer },
        Keys::Revoke { id } => KeysCommand::Revoke { id },
    };
    match portcullis::cli_keys::run(path, command) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match portcullis::setup::check(path) {
        Ok(summary) => {
            println!("{}: ok: {summary}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    match portcullis::server::build(path) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("portcullis: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}
