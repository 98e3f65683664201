//! `countersign-sandbox`: Countersign's fakes on loopback ports, for trying the real binaries
//! and `kubectl` on a machine without a cluster.
//!
//! `countersign-sandbox demo` is the one-command tour: simulated Kubernetes, GitHub and model,
//! the real `countersign` controller, bot and agent, from a labelled issue to a green check
//! (see `countersign_testkit::demo`). It exits non-zero when any step fails.
//!
//! `countersign-sandbox serve --dir DIR [--kubelet]` serves a fake kube-apiserver with the
//! Countersign CRDs installed, writes `DIR/kubeconfig`, prints one line containing `ready`,
//! and runs until interrupted. With `--kubelet`, created pods run as local processes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::demo;
use countersign_testkit::kubelet::Kubelet;

/// Countersign's sandbox: a simulated Kubernetes API (and more to come) on loopback ports.
#[derive(Parser, Debug)]
#[command(name = "countersign-sandbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The tour: label an issue, watch the real controller, bot and agent turn it into a pull
    /// request, its risk and approvals, and a green `countersign/approval` check. GitHub,
    /// Kubernetes and the AI model are simulated on loopback ports.
    Demo {
        /// The `countersign` binary [default: the one next to this program].
        #[arg(long, env = "COUNTERSIGN_BIN", value_name = "PATH")]
        countersign: Option<PathBuf>,
        /// Directory for the kubeconfig, logs and pod files [default: a new temp directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Longest wait for one step, e.g. `30s`.
        #[arg(long, default_value = "60s")]
        step_timeout: countersign_crds::GoDuration,
        /// Keep the simulated world (and the processes) running after the tour until
        /// interrupted, to look around with kubectl and the gate page.
        #[arg(long)]
        keep: bool,
    },
    /// Serve a fake kube-apiserver with the Countersign CRDs installed until interrupted.
    Serve {
        /// Directory for the kubeconfig (`DIR/kubeconfig`) and, with --kubelet, pod files.
        #[arg(long, env = "COUNTERSIGN_SANDBOX_DIR")]
        dir: PathBuf,
        /// Port on 127.0.0.1 to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 0, env = "COUNTERSIGN_SANDBOX_PORT")]
        port: u16,
        /// Run each created pod's command as a local process and report its exit and
        /// termination message in the pod status, like a kubelet would.
        #[arg(long)]
        kubelet: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { dir, port, kubelet } => serve(dir, port, kubelet).await,
        Command::Demo {
            countersign,
            dir,
            step_timeout,
            keep,
        } => {
            let countersign = match countersign {
                Some(path) => path,
                None => demo::sibling_binary(
                    &std::env::current_exe().context("Cannot find this program's path")?,
                ),
            };
            let options = demo::DemoOptions {
                countersign,
                dir: dir.unwrap_or_else(demo::default_dir),
                step_timeout: step_timeout.0,
            };
            let hold = async move {
                if keep {
                    println!("(--keep: running until Ctrl-C)");
                    shutdown_signal().await;
                }
            };
            demo::run(&options, |line| println!("{line}"), hold)
                .await
                .map(drop)
        }
    }
}

async fn serve(dir: PathBuf, port: u16, kubelet: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let server = FakeApiServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .context("Cannot start the fake kube-apiserver")?;
    for crd in countersign_crds::all() {
        server
            .install_crd(&crd)
            .context("Cannot install the Countersign CRDs")?;
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml())
        .with_context(|| format!("Cannot write {}", kubeconfig.display()))?;
    let kubelet_task = kubelet.then(|| {
        let kubelet = Kubelet::new(server.client(), dir.join("pods"));
        tokio::spawn(kubelet.run())
    });
    println!(
        "countersign-sandbox ready: apiserver {} (simulated Kubernetes{}), kubeconfig {}",
        server.url(),
        if kubelet {
            ", pods run as local processes"
        } else {
            ""
        },
        kubeconfig.display()
    );
    shutdown_signal().await;
    if let Some(task) = kubelet_task {
        task.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
