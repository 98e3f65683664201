//! `countersign`: the command-line entry point. Parses arguments and hands off.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Countersign: AI coding agents on Kubernetes whose pull requests humans countersign.
#[derive(Parser, Debug)]
#[command(name = "countersign", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (install with `kubectl apply -f crds/`).
    Crds {
        /// Write one file per CRD into this directory instead of printing to stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds { out: None } => {
            print!("{}", countersign::crds_cmd::render_all()?);
            Ok(())
        }
        Command::Crds { out: Some(dir) } => {
            for name in countersign::crds_cmd::write_dir(&dir)? {
                eprintln!("wrote {}", dir.join(name).display());
            }
            Ok(())
        }
    }
}
