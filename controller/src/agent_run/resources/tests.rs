//! Tests of the attempt's desired objects: the pod's three steps and their mounts, the
//! Secret, the NetworkPolicy and fork mode.

use serde_json::json;

use super::*;

use k8s_openapi::api::core::v1::Container;

fn fixtures() -> (AgentRun, Agent, Project) {
    let run: AgentRun = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "fix-42", "namespace": "team", "uid": "uid-1",
            "labels": {"app.kubernetes.io/instance": "argocd-app", "kustomize.toolkit.fluxcd.io/name": "apps", "helm.sh/chart": "x"},
            "annotations": {"argocd.argoproj.io/tracking-id": "apps:countersign.dev/AgentRun:team/fix-42"}},
        "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": "backend"}, "task": {"title": "Fix it"}}
    }))
    .expect("run");
    let agent: Agent = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "backend", "namespace": "team"},
        "spec": {"role": "backend", "runtimeClassName": "gvisor", "providers": [
            {"name": "openrouter", "kind": "openai", "model": "m", "apiKeySecretRef": {"name": "openrouter", "key": "api-key"}}
        ], "limits": {"timeout": "20m"}, "egress": [{"cidrs": ["10.20.0.0/16"], "ports": [443]}]}
    }))
    .expect("agent");
    let project: Project = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"repository": {"owner": "acme", "name": "api"}}
    }))
    .expect("project");
    (run, agent, project)
}

/// Each container's own lock-down, as the builder writes it. Whether that satisfies Pod
/// Security "restricted" is decided by the real admission plugin: tests/agent_runs_e2e.rs
/// runs every attempt pod in a namespace that enforces it on the real kube-apiserver.
fn assert_locked_down(pod: &Pod) {
    let spec = pod.spec.as_ref().expect("spec");
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.clone().unwrap_or_default();
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]), "{}", c.name);
        assert!(caps.add.unwrap_or_default().is_empty(), "{}", c.name);
    }
}

fn spec<'a>(
    run: &'a AgentRun,
    agent: &'a Agent,
    project: &'a Project,
    settings: &'a Settings,
) -> AttemptSpec<'a> {
    AttemptSpec {
        follow_up_branch: None,
        breakdown: false,
        guidance: (Vec::new(), false),
        run,
        agent,
        project,
        number: 2,
        provider: 0,
        settings,
        commit_author: CommitIdentity {
            name: "countersign-test[bot]".into(),
            email: "4242000+countersign-test[bot]@users.noreply.github.com".into(),
        },
        approved_plan: None,
    }
}

fn settings() -> Settings {
    Settings {
        gateway: Some(
            crate::settings::GatewaySettings::new(
                "http://countersign-gateway.cs.svc:8080",
                "cs",
                BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "countersign-gateway".to_owned(),
                )]),
            )
            .expect("gateway"),
        ),
        ..Settings::default()
    }
}

const TOKENS: AttemptTokens<'static> = AttemptTokens {
    clone: "ghs_clone",
    push: "ghs_push",
    gateway: "csgw_gateway",
};

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().expect("spec");
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

fn mounts(c: &Container) -> Vec<(&str, &str, bool)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.as_str(),
                m.mount_path.as_str(),
                m.read_only == Some(true),
            )
        })
        .collect()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn the_pod_runs_clone_work_push_each_locked_down() {
    let (run, agent, project) = fixtures();
    let settings = settings();
    let pod = spec(&run, &agent, &project, &settings).pod("abc123");
    assert_locked_down(&pod);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.active_deadline_seconds, Some(1200));
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["clone", "work"]);
    assert_eq!(spec.containers.len(), 1);
    for name in ["clone", "work", "push"] {
        let c = container(&pod, name);
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true),
            "{name}"
        );
        assert_eq!(
            c.command
                .as_ref()
                .and_then(|c| c.last())
                .map(String::as_str),
            Some(name)
        );
        assert!(
            c.env.iter().flatten().all(|e| e.value_from.is_none()),
            "{name}: no value from a Secret in any environment"
        );
    }
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("countersign.dev/gateway-token-sha256"))
            .map(String::as_str),
        Some("abc123")
    );
}

#[test]
fn each_token_is_mounted_only_into_its_step() {
    let (run, agent, project) = fixtures();
    let settings = settings();
    let pod = spec(&run, &agent, &project, &settings).pod("h");
    assert_eq!(
        mounts(container(&pod, "clone")),
        [
            ("workspace", "/workspace", false),
            ("tmp", "/tmp", false),
            ("task", "/var/run/countersign/task", true),
            ("clone-token", "/var/run/countersign/clone", true),
            ("handoff", "/var/run/countersign/handoff", false),
        ]
    );
    assert_eq!(
        mounts(container(&pod, "work")),
        [
            ("workspace", "/workspace", false),
            ("tmp", "/tmp", false),
            ("task", "/var/run/countersign/task", true),
            ("gateway-token", "/var/run/countersign/gateway", true),
        ],
        "work sees neither GitHub token nor the hand-off"
    );
    assert_eq!(
        mounts(container(&pod, "push")),
        [
            ("workspace", "/workspace", true),
            ("push-tmp", "/tmp", false),
            ("task", "/var/run/countersign/task", true),
            ("push-token", "/var/run/countersign/push", true),
            ("handoff", "/var/run/countersign/handoff", true),
        ]
    );
    let volumes = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap_or_default();
    let items = |name: &str| -> Vec<(String, String)> {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.items.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.key, i.path))
            .collect()
    };
    assert_eq!(
        items("clone-token"),
        [("clone-token".to_owned(), "token".to_owned())]
    );
    assert_eq!(
        items("push-token"),
        [("push-token".to_owned(), "token".to_owned())]
    );
    assert_eq!(
        items("gateway-token"),
        [("gateway-token".to_owned(), "token".to_owned())]
    );
    assert_eq!(
        items("task"),
        [("task.json".to_owned(), "task.json".to_owned())]
    );
    let work = container(&pod, "work");
    assert_eq!(
        env(work, "COUNTERSIGN_GATEWAY_URL").as_deref(),
        Some("http://countersign-gateway.cs.svc:8080")
    );
    assert_eq!(
        env(work, "COUNTERSIGN_GATEWAY_TOKEN_FILE").as_deref(),
        Some("/var/run/countersign/gateway/token")
    );
    assert_eq!(work.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(
        env(container(&pod, "push"), "COUNTERSIGN_PUSH_TOKEN_FILE").as_deref(),
        Some("/var/run/countersign/push/token")
    );
}

#[test]
fn children_are_owned_by_the_run_and_carry_no_gitops_tracking_metadata() {
    let (run, agent, project) = fixtures();
    let settings = settings();
    let attempt = spec(&run, &agent, &project, &settings);
    let pod = attempt.pod("h");
    let secret = attempt.secret(&TOKENS);
    let policy = attempt.network_policy();
    for meta in [&pod.metadata, &secret.metadata, &policy.metadata] {
        assert_eq!(meta.name.as_deref(), Some("fix-42-2"));
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("AgentRun", "uid-1", Some(true))
        );
        let labels = meta.labels.as_ref().expect("labels");
        assert!(
            labels.keys().all(|k| !k.contains("argoproj")
                && !k.contains("fluxcd")
                && !k.starts_with("helm.sh")
                && k != "app.kubernetes.io/instance"),
            "{labels:?}"
        );
    }
    assert!(secret.metadata.annotations.is_none());
    assert_eq!(secret.immutable, Some(true));
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["clone-token"].0, b"ghs_clone");
    assert_eq!(data["push-token"].0, b"ghs_push");
    assert_eq!(data["gateway-token"].0, b"csgw_gateway");
    let task: countersign_crds::task_file::TaskFile =
        serde_json::from_slice(&data["task.json"].0).expect("task file");
    assert_eq!(
        (
            task.repository.owner.as_str(),
            task.branch.as_str(),
            task.attempt
        ),
        ("acme", "countersign/fix-42", 2)
    );
    assert_eq!(task.repository.push_url, None);
    assert!(!String::from_utf8_lossy(&data["task.json"].0).contains("ghs_"));
}

#[test]
fn fork_mode_pushes_to_the_fork() {
    let (run, agent, mut project) = fixtures();
    project.spec.pull_requests.head_repository = Some(countersign_crds::project::HeadRepository {
        owner: "acme-agents".into(),
        name: "api".into(),
        installation: None,
    });
    let settings = settings();
    let task = spec(&run, &agent, &project, &settings).task_file();
    assert_eq!(task.repository.clone_url, "https://github.com/acme/api.git");
    assert_eq!(
        task.repository.push_url(),
        "https://github.com/acme-agents/api.git"
    );
}

#[test]
fn the_network_policy_allows_dns_the_gateway_the_git_host_and_the_agents_egress_only() {
    let (run, agent, project) = fixtures();
    let settings = settings();
    let policy = spec(&run, &agent, &project, &settings).network_policy();
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert_eq!(spec.ingress, Some(vec![]), "no ingress at all");
    let selector = spec.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selector.get(ATTEMPT_LABEL).map(String::as_str), Some("2"));
    let egress = spec.egress.unwrap();
    assert_eq!(egress.len(), 4, "{egress:#?}");
    let dns = egress[0].ports.as_ref().unwrap();
    assert!(dns.iter().all(|p| p.port == Some(IntOrString::Int(53))));
    assert!(egress[0].to.is_none());
    let gateway = &egress[1];
    assert_eq!(
        gateway.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(8080))
    );
    let peer = &gateway.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            "cs".to_owned()
        )]))
    );
    assert!(peer.pod_selector.is_some() && peer.ip_block.is_none());
    let git = &egress[2];
    assert_eq!(
        git.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(443))
    );
    let cidrs: Vec<&str> = git
        .to
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|p| p.ip_block.as_ref().map(|b| b.cidr.as_str()))
        .collect();
    assert_eq!(
        cidrs,
        crate::settings::GITHUB_GIT_CIDRS,
        "GitHub's git ranges, nothing else"
    );
    let extra = &egress[3];
    assert_eq!(
        extra.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(443))
    );
    assert_eq!(
        extra.to.as_ref().unwrap()[0]
            .ip_block
            .as_ref()
            .unwrap()
            .cidr,
        "10.20.0.0/16"
    );
    // No rule reaches the whole internet.
    assert!(
        egress
            .iter()
            .flat_map(|r| r.to.iter().flatten())
            .all(|p| p.ip_block.as_ref().is_none_or(|b| b.cidr != "0.0.0.0/0"))
    );
}

#[test]
fn a_public_git_host_is_any_public_address_on_the_git_port() {
    let (run, agent, project) = fixtures();
    let settings = Settings {
        git_egress: crate::settings::GitEgress::Public,
        git_url: "https://ghe.example.com:8443".into(),
        ..settings()
    };
    let egress = spec(&run, &agent, &project, &settings)
        .network_policy()
        .spec
        .and_then(|s| s.egress)
        .expect("egress");
    let git = &egress[2];
    assert_eq!(
        git.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(8443))
    );
    let v4 = git.to.as_ref().unwrap()[0].ip_block.clone().unwrap();
    assert_eq!(v4.cidr, "0.0.0.0/0");
    for private in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(
            v4.except.as_ref().unwrap().contains(&private.to_owned()),
            "{private}"
        );
    }
}

#[test]
fn attempt_names_fit_kubernetes_limits() {
    assert_eq!(attempt_name("short", 3), "short-3");
    let long = "a".repeat(80);
    let name = attempt_name(&long, 12);
    assert!(name.len() <= 63, "{name}");
    assert!(name.ends_with("-12"));
    assert_ne!(
        attempt_name(&format!("{long}x"), 12),
        name,
        "different runs get different names"
    );
    assert!(label_value(&long).len() <= 63);
}
