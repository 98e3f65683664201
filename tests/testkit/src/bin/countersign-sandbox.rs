//! `countersign-sandbox`: Countersign's fakes on loopback ports, for trying the real binaries
//! and `kubectl` on a machine without a cluster.
//!
//! `countersign-sandbox demo` is the one-command tour: simulated Kubernetes, GitHub and models,
//! the real `countersign` controller, bot and agent, from a labelled issue to a green check,
//! then an architect's breakdown into two pull requests gated by their own risk (see
//! `countersign_testkit::demo`). It exits non-zero when any step fails.
//!
//! `countersign-sandbox serve --dir DIR [--control-plane real|fake] [--kubelet]` serves a
//! kube-apiserver with the Countersign CRDs installed, writes `DIR/kubeconfig`, prints one
//! line containing `ready`, and runs until interrupted. `fake` (the default for now) is the
//! test kit's fake apiserver; `real` starts etcd, kube-apiserver and kube-controller-manager
//! built by `scripts/controlplane` (see `countersign_testkit::controlplane`). With
//! `--kubelet`, created pods are bound to a local node and run as local processes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::controlplane::{RealControlPlane, StartOptions, countersign_crds};
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
    /// request, its risk and approvals, and a green `countersign/approval` check; then an
    /// architect breaks a second issue into backend and frontend runs whose pull requests are
    /// each gated by their own risk. GitHub, Kubernetes and the AI models are simulated on
    /// loopback ports.
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
        /// Which Kubernetes: `real` (kube-apiserver, etcd and kube-controller-manager built
        /// by scripts/controlplane, built now if needed: about 10 minutes the first time, needs
        /// Go), `fake` (the test kit's simulated apiserver, instant), or `auto`: real when
        /// already built, else fake.
        #[arg(
            long,
            default_value = "auto",
            value_parser = ["auto", "real", "fake"],
            env = "COUNTERSIGN_DEMO_CONTROL_PLANE"
        )]
        control_plane: String,
    },
    /// The controller at scale: N AgentRuns (and so N pull requests and N ApprovalGates)
    /// through the real `countersign controller`; prints time to converge, Kubernetes requests
    /// by verb and resource, writes per run, steady-state requests and reads per reconcile,
    /// one full gate resync against an unchanged GitHub, and the controller's memory
    /// (see docs/benchmarks.md).
    BenchController {
        /// The `countersign` binary to run as the controller [default: the one next to this
        /// program].
        #[arg(long, env = "COUNTERSIGN_BIN", value_name = "PATH")]
        countersign: Option<PathBuf>,
        /// Directory for the kubeconfig and the controller's log [default: a new temp
        /// directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// AgentRuns to create.
        #[arg(long, default_value_t = 10_000)]
        runs: usize,
        /// Runs per Project (each Project has its own repository and Agent), 1 to 100.
        #[arg(long, default_value_t = 100)]
        runs_per_project: usize,
        /// The controller's --resync-interval.
        #[arg(long, default_value = "60s")]
        resync: countersign_crds::GoDuration,
        /// Length of the steady-state window after convergence (longer than --resync).
        #[arg(long, default_value = "150s")]
        steady: countersign_crds::GoDuration,
        /// Longest wait for convergence.
        #[arg(long, default_value = "60m")]
        timeout: countersign_crds::GoDuration,
        /// `real` (kube-apiserver and etcd built by scripts/controlplane, built now if
        /// needed) or `fake` (the test kit's apiserver).
        #[arg(long, default_value = "real", value_parser = ["real", "fake"])]
        control_plane: String,
    },
    /// Serve a kube-apiserver with the Countersign CRDs installed until interrupted.
    Serve {
        /// Directory for the kubeconfig (`DIR/kubeconfig`) and, with --kubelet, pod files.
        #[arg(long, env = "COUNTERSIGN_SANDBOX_DIR")]
        dir: PathBuf,
        /// Which apiserver: the test kit's fake, or the real control plane (etcd,
        /// kube-apiserver, kube-controller-manager) built by scripts/controlplane.
        #[arg(
            long,
            value_enum,
            default_value_t = ControlPlane::Fake,
            env = "COUNTERSIGN_SANDBOX_CONTROL_PLANE"
        )]
        control_plane: ControlPlane,
        /// Port on 127.0.0.1 for the fake apiserver; 0 picks a free one. The real control
        /// plane always picks free ports.
        #[arg(long, default_value_t = 0, env = "COUNTERSIGN_SANDBOX_PORT")]
        port: u16,
        /// Run each created pod's command as a local process and report its exit and
        /// termination message in the pod status, like a kubelet would.
        #[arg(long)]
        kubelet: bool,
    },
}

/// The apiserver `serve` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ControlPlane {
    /// kube-apiserver, etcd and kube-controller-manager built from Kubernetes' Go modules.
    Real,
    /// The test kit's fake apiserver (no admission, RBAC or garbage collector process).
    Fake,
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

/// `--countersign`, else the `countersign` binary next to this program.
fn countersign_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => Ok(demo::sibling_binary(
            &std::env::current_exe().context("Cannot find this program's path")?,
        )),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            dir,
            control_plane,
            port,
            kubelet,
        } => serve(dir, control_plane, port, kubelet).await,
        Command::BenchController {
            countersign,
            dir,
            runs,
            runs_per_project,
            resync,
            steady,
            timeout,
            control_plane,
        } => {
            let kubernetes = demo::DemoKubernetes::choose(&control_plane).await?;
            let countersign = countersign_binary(countersign)?;
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("countersign-bench-{}", std::process::id()))
            });
            let options = countersign_testkit::bench::BenchOptions {
                countersign,
                dir,
                kubernetes,
                runs,
                runs_per_project,
                resync: resync.0,
                steady: steady.0,
                timeout: timeout.0,
            };
            let report = countersign_testkit::bench::run(&options).await?;
            println!("{}", report.markdown);
            if !report.converged {
                anyhow::bail!("the runs did not converge");
            }
            Ok(())
        }
        Command::Demo {
            countersign,
            dir,
            step_timeout,
            keep,
            control_plane,
        } => {
            let kubernetes = demo::DemoKubernetes::choose(&control_plane).await?;
            let countersign = countersign_binary(countersign)?;
            let options = demo::DemoOptions {
                countersign,
                dir: dir.unwrap_or_else(demo::default_dir),
                step_timeout: step_timeout.0,
                kubernetes,
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

/// The served apiserver; dropping it stops it (and the real control plane's processes).
enum Served {
    Fake(FakeApiServer),
    Real(Box<RealControlPlane>),
}

async fn serve(
    dir: PathBuf,
    control_plane: ControlPlane,
    port: u16,
    kubelet: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let crds = countersign_crds().context("Cannot read the Countersign CRDs")?;
    let served = match control_plane {
        ControlPlane::Fake => {
            let server = FakeApiServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
                .context("Cannot start the fake kube-apiserver")?;
            for crd in &crds {
                server
                    .install_crd(crd)
                    .context("Cannot install the Countersign CRDs")?;
            }
            Served::Fake(server)
        }
        ControlPlane::Real => {
            anyhow::ensure!(
                port == 0,
                "--port applies to the fake apiserver; the real control plane picks free ports"
            );
            let options = StartOptions {
                crds,
                ..StartOptions::default()
            };
            Served::Real(Box::new(
                RealControlPlane::start_with(options)
                    .await
                    .context("Cannot start the real control plane")?,
            ))
        }
    };
    let (client, url, kubeconfig_yaml, what) = match &served {
        Served::Fake(server) => (
            server.client(),
            server.url(),
            server.kubeconfig_yaml(),
            "simulated Kubernetes".to_owned(),
        ),
        Served::Real(cp) => (
            cp.client(),
            cp.url().to_owned(),
            cp.kubeconfig_yaml(),
            format!(
                "real kube-apiserver, etcd and kube-controller-manager, ready in {:.1?}; logs in {}",
                cp.startup_time(),
                cp.dir().display()
            ),
        ),
    };
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml)
        .with_context(|| format!("Cannot write {}", kubeconfig.display()))?;
    let kubelet_task = kubelet.then(|| {
        let kubelet = Kubelet::new(client, dir.join("pods"));
        tokio::spawn(kubelet.run())
    });
    println!(
        "countersign-sandbox ready: apiserver {url} ({what}{}), kubeconfig {}",
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
    drop(served);
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
