//! `countersign`: the command-line entry point. Parses arguments and hands off.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
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
    /// Run the controller: reconcile Projects, Agents and AgentRuns while holding the
    /// leader-election Lease, and serve /metrics, /healthz and /readyz.
    Controller(Box<countersign_controller::config::ControllerArgs>),
    /// Run the GitHub App bot: serve POST /webhook (plus /healthz, /readyz and /metrics),
    /// turn labels, comment commands and pull-request events into Kubernetes objects.
    Bot(Box<countersign_bot::config::BotArgs>),
    /// Run the provider gateway: the only holder of AI provider keys. Serves the
    /// OpenAI-compatible `/v1/chat/completions` and Anthropic `/v1/messages` to agent pods
    /// with per-attempt tokens, enforces budgets, fails over between providers and counts
    /// usage (plus /metrics, /healthz and /readyz).
    Gateway(Box<countersign_gateway::config::GatewayArgs>),
    /// Send recorded webhook deliveries to a running bot, signed with its secret.
    Replay(countersign_bot::replay::ReplayArgs),
    /// Run one step of an agent attempt (the entry points of agent pods): `clone`, then
    /// `work` (the model and verify commands, with no GitHub token or provider key), then
    /// `push` (re-checks and pushes the change, writes the result to the termination log).
    Agent {
        #[command(subcommand)]
        step: countersign_agent::config::AgentCommand,
    },
    /// Try a RiskPolicy offline: score a change (`eval`) or check policy files (`validate`).
    Policy {
        #[command(subcommand)]
        command: countersign::policy_cmd::PolicyCommand,
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
        Command::Controller(args) => runtime()?.block_on(countersign_controller::process::serve(
            *args,
            shutdown_signal(),
        )),
        Command::Bot(args) => {
            runtime()?.block_on(countersign_bot::server::serve(*args, shutdown_signal()))
        }
        Command::Replay(args) => runtime()?.block_on(countersign_bot::replay::run(args)),
        Command::Gateway(args) => {
            runtime()?.block_on(countersign_gateway::server::serve(*args, shutdown_signal()))
        }
        Command::Policy { command } => countersign::policy_cmd::run(command),
        Command::Agent { step } => countersign::agent_cmd::run(step),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
