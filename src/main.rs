//! `countersign`: the command-line entry point. Parses arguments and hands off.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Countersign: AI coding agents on Kubernetes whose pull requests humans countersign.
#[derive(Parser, Debug)]
#[command(name = "countersign", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// How log lines are written: `text` (coloured only when stderr is a terminal) or `json`
    /// (one object per line). `RUST_LOG` sets the filter (default `info`).
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_LOG_FORMAT",
        value_enum,
        default_value_t = countersign_telemetry::LogFormat::Text
    )]
    log_format: countersign_telemetry::LogFormat,

    /// Export traces (every reconcile and webhook delivery span) over OTLP/HTTP to this
    /// collector endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    #[cfg(feature = "otlp")]
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        value_name = "URL"
    )]
    otlp_endpoint: Option<String>,

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
    /// Run the GitHub App bot: serve POST /webhook and the gate pages publicly (and /healthz,
    /// /readyz, /metrics, /api/v1 and admission on the internal listener), turn labels,
    /// comment commands and pull-request events into Kubernetes objects.
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
    /// One evaluation of the bot's policy API (`simulate` or `validate`): the request body on
    /// stdin, `{"status", "body"}` on stdout. The bot runs it in a memory-limited process.
    #[command(hide = true)]
    PolicyApiWorker {
        /// `simulate` or `validate`.
        endpoint: String,
    },
}

/// The exit codes, shown by `--help` and documented in docs/operations.md.
const EXIT_CODES: &str = "Exit codes: 0 success (a server stopped by SIGTERM or Ctrl-C included); \
1 failure (invalid configuration, a server that could not start or stopped by itself, an agent \
attempt that did not succeed); 2 invalid command line.";

fn main() -> ExitCode {
    // Parsed first, so the log format applies from the first line (clap prints usage errors
    // itself and exits 2).
    let cli = Cli::parse();
    #[cfg(feature = "otlp")]
    let _traces = match &cli.otlp_endpoint {
        Some(endpoint) => {
            let service = match cli.command {
                Command::Controller(_) => "countersign-controller",
                Command::Bot(_) => "countersign-bot",
                Command::Gateway(_) => "countersign-gateway",
                Command::Agent { .. } => "countersign-agent",
                _ => "countersign",
            };
            match countersign_telemetry::init_logging_with_otlp(cli.log_format, endpoint, service) {
                Ok(guard) => Some(guard),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => {
            countersign_telemetry::init_logging(cli.log_format);
            None
        }
    };
    #[cfg(not(feature = "otlp"))]
    countersign_telemetry::init_logging(cli.log_format);
    match run(cli) {
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
        Command::PolicyApiWorker { endpoint } => {
            countersign_bot::api::runner::run_worker(&endpoint)
        }
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
