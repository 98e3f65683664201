//! The chart installed on a real cluster with nodes (kind, `kind-config.yaml`), with the image
//! built by the Dockerfile and loaded into it: the controller and the bot become ready and the
//! default RiskPolicy is `Ready`. Ignored by default; run it with
//! `cargo test --test kind -- --ignored` once `$KUBECONFIG`'s current context is a kind
//! cluster (`kind-…`) with `countersign:dev` loaded (docs/install.md).

use std::process::Command;

use countersign_testkit::tools::Tool;

fn run(program: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs a kind cluster in $KUBECONFIG with countersign:dev loaded"]
fn the_chart_installs_and_becomes_ready_on_kind() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to the kind cluster's kubeconfig"
    );
    let kubectl = Tool::Kubectl
        .find()
        .expect("kubectl")
        .expect("scripts/helm installs kubectl");
    let helm = Tool::Helm
        .find()
        .expect("helm")
        .expect("scripts/helm installs helm");
    let context = run(&kubectl, &["config", "current-context"]);
    assert!(
        context.trim().starts_with("kind-"),
        "refusing to install into {context:?}: not a kind cluster"
    );
    let ns = "countersign-kind-test";
    let team = "countersign-kind-team";
    for namespace in [ns, team] {
        let _ = Command::new(&kubectl)
            .args(["create", "namespace", namespace])
            .output();
    }
    // A placeholder App Secret: the controller starts without reaching GitHub; the bot needs
    // the App only for its first delivery, after it is ready.
    let _ = Command::new(&kubectl)
        .args([
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "countersign-github",
            "--from-literal=app-id=1",
            &format!(
                "--from-literal=private-key.pem={}",
                countersign_testkit::github::TEST_APP_PRIVATE_KEY_PEM
            ),
            "--from-literal=webhook-secret=kind-test",
        ])
        .output();
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/countersign");
    let values = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/countersign/ci/kind-values.yaml"
    );
    run(
        &helm,
        &[
            "upgrade",
            "--install",
            "countersign",
            chart,
            "-n",
            ns,
            "-f",
            values,
            "--set",
            &format!("controller.agentNamespaces={{{team}}}"),
            "--set",
            "bot.extraArgs={--bot-login=countersign-test[bot]}",
            "--wait",
            "--timeout",
            "5m",
        ],
    );
    run(
        &kubectl,
        &[
            "-n",
            ns,
            "rollout",
            "status",
            "deploy/countersign-controller",
            "--timeout=3m",
        ],
    );
    run(
        &kubectl,
        &[
            "-n",
            team,
            "apply",
            "-f",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/policies/manifests/default-riskpolicy.yaml"
            ),
        ],
    );
    run(
        &kubectl,
        &[
            "-n",
            team,
            "wait",
            "--for=condition=Ready",
            "riskpolicy/default",
            "--timeout=2m",
        ],
    );
    run(&helm, &["uninstall", "countersign", "-n", ns, "--wait"]);
}
