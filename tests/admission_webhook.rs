//! The RiskPolicy admission webhook as Kubernetes calls it: the real `countersign bot` binary
//! serves `/admission/riskpolicies` over HTTPS on its internal listener (a CA and a serving
//! certificate for 127.0.0.1 made at test time), an `admissionregistration.k8s.io/v1`
//! ValidatingWebhookConfiguration registers it with the real kube-apiserver, and every write
//! below goes through that apiserver (the kube client and the kubectl built with it):
//!
//! - a RiskPolicy whose Rego module does not compile, which the CRD's schema and CEL rules
//!   admit, is refused with the webhook's reasons; a valid one is stored; a policy naming a
//!   role Countersign does not know is stored with the webhook's warning, which kubectl prints;
//!   an UPDATE that breaks a stored policy is refused and the stored policy stays as it was;
//!   the CRD's own CEL rules answer first (schema validation runs before validating webhooks).
//! - with the bot stopped, `failurePolicy: Fail` refuses creates and updates (the apiserver
//!   cannot reach the webhook) in the namespaces the webhook selects, while DELETE (not in its
//!   rules) and other namespaces go on.
//!
//! The webhook selects only the test's namespace (`namespaceSelector` on
//! `kubernetes.io/metadata.name`), so tests sharing one control plane never see each other's.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use support::kubectl::{Kubectl, text};

use countersign_crds::RiskPolicy;
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{
    FakeGitHub, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_SLUG,
};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;

/// Upper bound of any single wait (a process start, a webhook becoming active, a kubectl).
const WAIT: Duration = Duration::from_secs(60);
/// The webhook's name, as the apiserver quotes it in its answers.
const WEBHOOK: &str = "riskpolicies.countersign.dev";
/// What the apiserver puts before the webhook's own message when the webhook says no.
const DENIED: &str = "admission webhook \"riskpolicies.countersign.dev\" denied the request";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name)
}

/// The RiskPolicy in fixture `name`, for `namespace`.
fn policy(name: &str, namespace: &str) -> RiskPolicy {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let mut policy: RiskPolicy = serde_yaml::from_str(&text).expect("fixture is a RiskPolicy");
    policy.metadata.namespace = Some(namespace.to_owned());
    policy
}

/// A fresh CA and a serving certificate for `127.0.0.1` it signed, as files in `dir`.
struct ServingCertificate {
    ca_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn serving_certificate(dir: &Path) -> ServingCertificate {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "countersign-webhook-test-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).expect("CA certificate");

    let key = KeyPair::generate().expect("serving key");
    // An IP address SAN: the apiserver (Go) verifies the URL's host against SANs only.
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("serving params");
    leaf.distinguished_name
        .push(DnType::CommonName, "countersign-bot");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf
        .signed_by(&key, &ca, &ca_key)
        .expect("serving certificate");

    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    std::fs::write(&cert_file, leaf.pem()).expect("write certificate");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    ServingCertificate {
        ca_pem: ca.pem(),
        cert_file,
        key_file,
    }
}

/// A running `countersign bot` process; killed when dropped.
struct BotProcess {
    child: tokio::process::Child,
    /// The internal listener (HTTPS): probes, metrics, policy API and admission.
    internal: SocketAddr,
    log: PathBuf,
}

impl BotProcess {
    /// Starts the real binary with HTTPS on both listeners (port 0 on 127.0.0.1), watching
    /// `namespace`, and waits for the internal address in its startup line.
    async fn start(
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        github: &FakeGitHub,
        tls: &ServingCertificate,
    ) -> BotProcess {
        let key = dir.join("app.pem");
        std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM).expect("write App key");
        let secret = dir.join("webhook-secret");
        std::fs::write(&secret, "webhook-secret").expect("write webhook secret");
        let log = dir.join("bot.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let args: Vec<String> = vec![
            "bot".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--internal-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert-file".into(),
            tls.cert_file.display().to_string(),
            "--tls-key-file".into(),
            tls.key_file.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--webhook-secret-file".into(),
            secret.display().to_string(),
            "--bot-login".into(),
            format!("{TEST_APP_SLUG}[bot]"),
            "--github-app-id".into(),
            TEST_APP_ID.to_string(),
            "--github-app-private-key-file".into(),
            key.display().to_string(),
            "--github-api-url".into(),
            github.url(),
        ];
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(&args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start countersign bot");
        let mut bot = BotProcess {
            child,
            internal: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let internal = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(addr) = logged_internal_addr(&bot.log_text()) {
                    return addr;
                }
                if let Ok(Some(status)) = bot.child.try_wait() {
                    panic!("countersign bot exited ({status}):\n{}", bot.log_text());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("countersign bot never started:\n{}", bot.log_text()));
        bot.internal = internal;
        bot
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process and waits until it is gone (its port refuses connections).
    async fn stop(mut self) {
        self.child.start_kill().expect("kill the bot");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the bot exits")
            .expect("wait for the bot");
    }
}

/// `internal=127.0.0.1:PORT` from `countersign bot`'s startup line.
fn logged_internal_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find(|l| l.contains("starting countersign bot"))?
        .split_whitespace()
        .find_map(|field| field.strip_prefix("internal="))?
        .parse()
        .ok()
}

/// The webhook registration: RiskPolicy CREATE and UPDATE in `namespace` only, to the bot's
/// internal listener, trusting `ca_pem`, failing closed.
fn webhook_configuration(
    name: &str,
    namespace: &str,
    addr: SocketAddr,
    ca_pem: &str,
) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": WEBHOOK,
            "clientConfig": {
                "url": format!("https://{addr}/admission/riskpolicies"),
                "caBundle": k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()),
            },
            "rules": [{
                "apiGroups": ["countersign.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["riskpolicies"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))
    .expect("a ValidatingWebhookConfiguration")
}

/// The Status of a refused request.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("{what} must be refused by the apiserver, got {other:?}"),
    }
}

/// Waits until the apiserver calls the webhook (a new configuration takes effect a moment
/// after it is written): dry-run creates of `broken` until one is denied by it.
async fn wait_until_active(policies: &Api<RiskPolicy>, broken: &RiskPolicy, bot: &BotProcess) {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut last = None;
    let active = tokio::time::timeout(WAIT, async {
        loop {
            match policies.create(&dry_run, broken).await {
                Err(kube::Error::Api(status)) if status.message.contains(DENIED) => return,
                other => last = Some(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if active.is_err() {
        panic!(
            "the apiserver never called the webhook; last answer: {last:#?}\nbot log:\n{}",
            bot.log_text()
        );
    }
}

/// One test's world: the real control plane, a namespace, a fake GitHub, the bot serving
/// HTTPS, and the webhook registered for the namespace and active.
struct World {
    cluster: TestCluster,
    ns: String,
    _dir: tempfile::TempDir,
    bot: BotProcess,
    kubectl: Kubectl,
    webhook: String,
    _github: FakeGitHub,
}

impl World {
    /// `None` (after a loud note) when the real control plane is not built outside CI.
    async fn start(test: &str) -> Option<World> {
        let cluster = TestCluster::real_or_skip(test).await.expect("cluster")?;
        let real = cluster.as_real().expect("the real control plane");
        let ns = cluster.create_namespace("admission").await.expect("ns");
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = serving_certificate(dir.path());
        let github = FakeGitHub::start().await.expect("fake GitHub");
        let bot = BotProcess::start(dir.path(), real.kubeconfig_path(), &ns, &github, &tls).await;

        let webhook = format!("countersign-riskpolicies-{ns}");
        Api::<ValidatingWebhookConfiguration>::all(cluster.client())
            .create(
                &PostParams::default(),
                &webhook_configuration(&webhook, &ns, bot.internal, &tls.ca_pem),
            )
            .await
            .expect("register the webhook");
        let policies = Api::<RiskPolicy>::namespaced(cluster.client(), &ns);
        wait_until_active(&policies, &policy("broken-rego-riskpolicy.yaml", &ns), &bot).await;

        let kubectl = Kubectl::new(
            real.kubeconfig_path().to_owned(),
            dir.path().join("home"),
            None,
            WAIT,
        )
        .await;
        Some(World {
            cluster,
            ns,
            _dir: dir,
            bot,
            kubectl,
            webhook,
            _github: github,
        })
    }

    fn policies(&self) -> Api<RiskPolicy> {
        Api::namespaced(self.cluster.client(), &self.ns)
    }

    async fn kubectl_apply(&self, fixture_name: &str) -> Output {
        let path = fixture(fixture_name);
        self.kubectl
            .run(&["apply", "-n", &self.ns, "-f", path.to_str().expect("utf-8")])
            .await
    }

    async fn unregister(&self) {
        Api::<ValidatingWebhookConfiguration>::all(self.cluster.client())
            .delete(&self.webhook, &DeleteParams::default())
            .await
            .expect("remove the webhook");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_asks_the_bot_over_tls_before_storing_a_risk_policy() {
    let Some(w) = World::start("RiskPolicy admission webhook").await else {
        return;
    };
    let policies = w.policies();

    // A Rego module that does not compile: refused with the webhook's reasons, not stored.
    let broken = policy("broken-rego-riskpolicy.yaml", &w.ns);
    let status = refusal(
        policies.create(&PostParams::default(), &broken).await,
        "a policy whose Rego does not compile",
    );
    assert_eq!(status.code, 400, "{status:?}");
    assert!(status.message.contains(DENIED), "{status:?}");
    assert!(
        status.message.contains("spec.rego.module"),
        "the webhook names the field: {status:?}"
    );
    assert!(
        policies.get_opt("broken").await.expect("get").is_none(),
        "a refused policy is not stored"
    );
    // kubectl shows the same reasons and fails.
    let out = w.kubectl_apply("broken-rego-riskpolicy.yaml").await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(DENIED) && stderr.contains("spec.rego.module"),
        "{stderr}"
    );

    // A valid policy is stored, without warnings.
    let out = w.kubectl_apply("valid-riskpolicy.yaml").await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("riskpolicy.countersign.dev/guarded created"),
        "{out:?}"
    );
    assert!(!text(&out.stderr).contains("Warning"), "{out:?}");
    let stored = policies.get("guarded").await.expect("stored");
    assert_eq!(stored.metadata.generation, Some(1));

    // An unknown role is allowed; the webhook's warning reaches the user through kubectl.
    let out = w.kubectl_apply("unknown-role-riskpolicy.yaml").await;
    assert!(out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Warning: spec.workflows.critical.approvers: role \"ciso\""),
        "{stderr}"
    );

    // An UPDATE that breaks the stored policy (a glob that does not compile) is refused,
    // and the policy stays as it was.
    let status = refusal(
        policies
            .patch(
                "guarded",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"neverAutoApprovePaths": ["ok/**", "docs/["]}})),
            )
            .await,
        "an update adding a glob that does not compile",
    );
    assert!(status.message.contains(DENIED), "{status:?}");
    assert!(
        status.message.contains("spec.neverAutoApprovePaths[1]"),
        "the webhook names the field: {status:?}"
    );
    let mut broken_rego = stored.clone();
    broken_rego.spec.rego = broken.spec.rego.clone();
    let status = refusal(
        policies
            .replace("guarded", &PostParams::default(), &broken_rego)
            .await,
        "a replace with Rego that does not compile",
    );
    assert!(
        status.message.contains(DENIED) && status.message.contains("spec.rego.module"),
        "{status:?}"
    );
    let after = policies.get("guarded").await.expect("still stored");
    assert_eq!(after.metadata.generation, Some(1), "unchanged");
    assert_eq!(after.spec, stored.spec);
    // A valid UPDATE goes through the webhook and is stored.
    let updated = policies
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"neverAutoApprovePaths": ["migrations/**"]}})),
        )
        .await
        .expect("a valid update is admitted");
    assert_eq!(updated.metadata.generation, Some(2));

    // The CRD's own rules come first: schema and CEL validation happen before validating
    // webhooks, so a policy breaking both gets the CRD's message (and a 422).
    let mut both = broken.clone();
    both.metadata.name = Some("both".into());
    let mut value = serde_json::to_value(&both).expect("serialises");
    value["spec"]["thresholds"] = json!({"medium": 8, "high": 5, "critical": 9});
    let both: RiskPolicy = serde_json::from_value(value).expect("a RiskPolicy");
    let status = refusal(
        policies.create(&PostParams::default(), &both).await,
        "a policy breaking a CEL rule",
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    assert!(
        status
            .message
            .contains("thresholds must rise: medium < high < critical")
            && !status.message.contains("admission webhook"),
        "{status:?}"
    );

    w.unregister().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_bot_down_failure_policy_fail_refuses_writes_where_the_webhook_applies() {
    let Some(w) = World::start("RiskPolicy admission webhook unreachable").await else {
        return;
    };
    let policies = w.policies();
    let valid = policy("valid-riskpolicy.yaml", &w.ns);
    policies
        .create(&PostParams::default(), &valid)
        .await
        .expect("admitted while the bot runs");

    let port = w.bot.internal.port();
    let World {
        cluster, ns, bot, ..
    } = w;
    bot.stop().await;
    let policies = Api::<RiskPolicy>::namespaced(cluster.client(), &ns);

    // Creating: the apiserver cannot call the webhook and fails closed.
    let mut other = valid.clone();
    other.metadata.name = Some("another".into());
    let status = refusal(
        policies.create(&PostParams::default(), &other).await,
        "a create while the webhook is unreachable",
    );
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status
            .message
            .contains(&format!("failed calling webhook \"{WEBHOOK}\""))
            && status.message.contains(&format!("127.0.0.1:{port}")),
        "{status:?}"
    );
    assert!(policies.get_opt("another").await.expect("get").is_none());

    // Updating, even with a valid change: refused the same way.
    let status = refusal(
        policies
            .patch(
                "guarded",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"neverAutoApprovePaths": ["migrations/**"]}})),
            )
            .await,
        "an update while the webhook is unreachable",
    );
    assert!(
        status
            .message
            .contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
        "{status:?}"
    );
    assert_eq!(
        policies
            .get("guarded")
            .await
            .expect("stored")
            .metadata
            .generation,
        Some(1)
    );

    // Another namespace is not selected by this webhook: its writes go on.
    let elsewhere = cluster.create_namespace("no-webhook").await.expect("ns");
    let mut there = valid.clone();
    there.metadata.namespace = Some(elsewhere.clone());
    Api::<RiskPolicy>::namespaced(cluster.client(), &elsewhere)
        .create(&PostParams::default(), &there)
        .await
        .expect("namespaces the webhook does not select are unaffected");

    // DELETE is not in the webhook's rules: a policy can still be removed.
    policies
        .delete("guarded", &DeleteParams::default())
        .await
        .expect("delete is not sent to the webhook");

    Api::<ValidatingWebhookConfiguration>::all(cluster.client())
        .delete(
            &format!("countersign-riskpolicies-{ns}"),
            &DeleteParams::default(),
        )
        .await
        .expect("remove the webhook");
}
