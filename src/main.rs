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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => run(&cli.config),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match portcullis::config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok: {}",
                path.display(),
                portcullis::runtime::summary(&config)
            );
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
