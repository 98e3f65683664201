//! Desired state of one attempt: its Secret, Pod and NetworkPolicy, built as pure functions.
//!
//! The pod is locked down by default (Pod Security "restricted"): non-root, read-only root
//! filesystem with emptyDir scratch space, no capabilities, no privilege escalation, the
//! runtime's default seccomp profile, no service account token, `restartPolicy: Never` and an
//! `activeDeadlineSeconds` from the timeout. The NetworkPolicy allows DNS and public egress
//! only: private ranges, link-local (cloud metadata) and loopback are blocked, and no ingress.
//! Children carry only our own labels, never the run's (so Argo CD, Flux and Helm tracking
//! labels are not copied), and are owned by the run so garbage collection removes them.

use std::collections::BTreeMap;

use countersign_crds::task_file::{self, CommitIdentity, TaskFile, TaskRepository};
use countersign_crds::{Agent, AgentRun, Project};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::settings::Settings;

/// Label naming the run a child belongs to.
pub const RUN_LABEL: &str = "countersign.dev/run";
/// Label with the attempt number of a child.
pub const ATTEMPT_LABEL: &str = "countersign.dev/attempt";
/// Label with the provider entry an attempt uses.
pub const PROVIDER_LABEL: &str = "countersign.dev/provider";
/// Label with the agent of a run's children.
pub const AGENT_LABEL: &str = countersign_crds::keys::AGENT_LABEL;
/// Non-root user the agent runs as.
const AGENT_UID: i64 = 65532;
/// Destinations agent pods may never reach: private, shared, link-local (cloud metadata
/// at 169.254.169.254) and loopback ranges.
const BLOCKED_V4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
];
const BLOCKED_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];

/// Everything needed to build one attempt's objects.
pub struct AttemptSpec<'a> {
    /// The run.
    pub run: &'a AgentRun,
    /// Its agent.
    pub agent: &'a Agent,
    /// Its project.
    pub project: &'a Project,
    /// Attempt number, from 1.
    pub number: u32,
    /// Index into `agent.spec.providers`.
    pub provider: usize,
    /// Controller settings (default image and command, git host).
    pub settings: &'a Settings,
    /// Who the agent commits as (the GitHub App's bot account).
    pub commit_author: CommitIdentity,
    /// In control mode, the plan a human approved (absent while planning).
    pub approved_plan: Option<String>,
}

/// The name shared by an attempt's Pod, Secret and NetworkPolicy: `<run>-<n>`, shortened
/// with a stable hash when the run name is long, so it always fits in 63 characters.
pub fn attempt_name(run: &str, number: u32) -> String {
    countersign_crds::names::with_suffix(run, &format!("-{number}"))
}

/// A label value for `text`: at most 63 characters, or a hash when it does not fit.
pub(crate) fn label_value(text: &str) -> String {
    countersign_crds::names::label_value(text)
}

impl AttemptSpec<'_> {
    fn name(&self) -> String {
        attempt_name(&self.run.name_any(), self.number)
    }

    fn provider(&self) -> &countersign_crds::Provider {
        &self.agent.spec.providers[self.provider.min(self.agent.spec.providers.len() - 1)]
    }

    fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (RUN_LABEL.to_owned(), label_value(&self.run.name_any())),
            (ATTEMPT_LABEL.to_owned(), self.number.to_string()),
        ])
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/name".into(), "countersign-agent".into());
        labels.insert("app.kubernetes.io/managed-by".into(), "countersign".into());
        labels.insert(AGENT_LABEL.into(), label_value(&self.agent.name_any()));
        labels.insert(PROVIDER_LABEL.into(), label_value(&self.provider().name));
        labels
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name()),
            namespace: self.run.namespace(),
            labels: Some(self.labels()),
            owner_references: self.run.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }

    /// The task document the agent reads.
    pub fn task_file(&self) -> TaskFile {
        let run = self.run;
        let repository = &self.project.spec.repository;
        TaskFile {
            version: task_file::TASK_FILE_VERSION,
            namespace: run.namespace().unwrap_or_default(),
            run: run.name_any(),
            attempt: self.number,
            repository: TaskRepository {
                owner: self.project.spec.repository.owner.clone(),
                name: self.project.spec.repository.name.clone(),
                default_branch: self.project.spec.repository.default_branch.clone(),
                clone_url: format!(
                    "{}/{}/{}.git",
                    self.settings.git_url.trim_end_matches('/'),
                    repository.owner,
                    repository.name
                ),
            },
            branch: task_file::branch_for(&run.name_any()),
            task: run.spec.task.clone(),
            mode: super::decide::run_mode(run, Some(self.agent)),
            provider: self.provider().clone(),
            limits: self.agent.spec.limits.clone(),
            guardrails: self.agent.spec.guardrails.clone(),
            verify: self.agent.spec.verify.clone(),
            commit_author: self.commit_author.clone(),
            approved_plan: self.approved_plan.clone(),
        }
    }

    /// The attempt's Secret: the task document and the repository token. Immutable, owned
    /// by the run, mounted read-only into this attempt's pod only.
    pub fn secret(&self, token: &str) -> Secret {
        let task = serde_json::to_vec(&self.task_file()).expect("a task file always serialises");
        Secret {
            metadata: self.metadata(),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (task_file::TASK_KEY.to_owned(), ByteString(task)),
                (
                    task_file::TOKEN_KEY.to_owned(),
                    ByteString(token.as_bytes().to_vec()),
                ),
            ])),
            ..Secret::default()
        }
    }

    /// The attempt's restricted Pod.
    pub fn pod(&self) -> Pod {
        let agent = &self.agent.spec;
        let timeout = self.run.spec.timeout.unwrap_or(agent.limits.timeout);
        let provider = self.provider();
        let mut env = vec![
            env_value("COUNTERSIGN_RUN", &self.run.name_any()),
            env_value("COUNTERSIGN_ATTEMPT", &self.number.to_string()),
            env_value(
                "COUNTERSIGN_TASK_FILE",
                &format!("{}/{}", task_file::TASK_DIR, task_file::TASK_KEY),
            ),
            env_value(
                "COUNTERSIGN_TOKEN_FILE",
                &format!("{}/{}", task_file::TASK_DIR, task_file::TOKEN_KEY),
            ),
            env_value("COUNTERSIGN_WORKSPACE", "/workspace"),
            env_value("HOME", "/workspace"),
        ];
        if let Some(key) = &provider.api_key_secret_ref {
            env.push(env_secret(task_file::API_KEY_ENV, &key.name, &key.key));
        }
        for var in provider.command.iter().flat_map(|c| &c.env) {
            env.push(env_secret(
                &var.name,
                &var.secret_key_ref.name,
                &var.secret_key_ref.key,
            ));
        }
        let container = Container {
            name: "agent".into(),
            image: Some(
                agent
                    .image
                    .clone()
                    .unwrap_or_else(|| self.settings.agent_image.clone()),
            ),
            command: Some(self.settings.agent_command.clone()),
            env: Some(env),
            working_dir: Some("/workspace".into()),
            resources: Some(agent.resources.clone().unwrap_or_else(default_resources)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(runtime_default()),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![
                mount("workspace", "/workspace", false),
                mount("tmp", "/tmp", false),
                mount("task", task_file::TASK_DIR, true),
            ]),
            termination_message_path: Some("/dev/termination-log".into()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Container::default()
        };
        Pod {
            metadata: self.metadata(),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                runtime_class_name: agent.runtime_class_name.clone(),
                active_deadline_seconds: Some(
                    i64::try_from(timeout.0.as_secs().max(1)).unwrap_or(i64::MAX),
                ),
                termination_grace_period_seconds: Some(10),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(AGENT_UID),
                    run_as_group: Some(AGENT_UID),
                    fs_group: Some(AGENT_UID),
                    seccomp_profile: Some(runtime_default()),
                    ..PodSecurityContext::default()
                }),
                containers: vec![container],
                volumes: Some(vec![
                    Volume {
                        name: "workspace".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("4Gi".into())),
                            ..Default::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("1Gi".into())),
                            ..Default::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "task".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(self.name()),
                            default_mode: Some(0o440),
                            ..SecretVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// The attempt's NetworkPolicy: no ingress; egress to DNS and the public internet only.
    pub fn network_policy(&self) -> NetworkPolicy {
        let public = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: Some(except.iter().map(|s| (*s).to_owned()).collect()),
            }),
            ..NetworkPolicyPeer::default()
        };
        let dns_port = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.into()),
            end_port: None,
        };
        NetworkPolicy {
            metadata: self.metadata(),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    match_expressions: None,
                }),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![]),
                egress: Some(vec![
                    // Cluster DNS usually lives in a private range, so it is allowed by port.
                    NetworkPolicyEgressRule {
                        ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                        to: None,
                    },
                    NetworkPolicyEgressRule {
                        ports: None,
                        to: Some(vec![
                            public("0.0.0.0/0", &BLOCKED_V4),
                            public("::/0", &BLOCKED_V6),
                        ]),
                    },
                ]),
            }),
        }
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn default_resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("250m", "512Mi")),
        limits: Some(quantities("2", "4Gi")),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
            ], "limits": {"timeout": "20m"}}
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

    /// The Pod Security Standards "restricted" profile, as the admission controller checks it.
    fn restricted_violations(pod: &Pod) -> Vec<String> {
        let mut bad = Vec::new();
        let spec = pod.spec.as_ref().expect("spec");
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        if spec.host_network == Some(true)
            || spec.host_pid == Some(true)
            || spec.host_ipc == Some(true)
        {
            bad.push("host namespaces".to_owned());
        }
        for volume in spec.volumes.iter().flatten() {
            let allowed = volume.config_map.is_some()
                || volume.csi.is_some()
                || volume.downward_api.is_some()
                || volume.empty_dir.is_some()
                || volume.ephemeral.is_some()
                || volume.persistent_volume_claim.is_some()
                || volume.projected.is_some()
                || volume.secret.is_some();
            if !allowed {
                bad.push(format!("volume {} has a restricted type", volume.name));
            }
        }
        let pod_seccomp = pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
        if pod_sc.run_as_user == Some(0) {
            bad.push("pod runAsUser 0".into());
        }
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let sc = c.security_context.clone().unwrap_or_default();
            if sc.privileged == Some(true) {
                bad.push(format!("{} privileged", c.name));
            }
            if sc.allow_privilege_escalation != Some(false) {
                bad.push(format!("{} allowPrivilegeEscalation != false", c.name));
            }
            if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
                bad.push(format!("{} runAsNonRoot != true", c.name));
            }
            if sc.run_as_user == Some(0) {
                bad.push(format!("{} runAsUser 0", c.name));
            }
            let seccomp = sc
                .seccomp_profile
                .as_ref()
                .map(|s| s.type_.as_str())
                .or(pod_seccomp);
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                bad.push(format!("{} seccompProfile", c.name));
            }
            let caps = sc.capabilities.clone().unwrap_or_default();
            if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
                bad.push(format!("{} does not drop ALL capabilities", c.name));
            }
            if caps
                .add
                .unwrap_or_default()
                .iter()
                .any(|a| a != "NET_BIND_SERVICE")
            {
                bad.push(format!("{} adds capabilities", c.name));
            }
            if c.ports
                .iter()
                .flatten()
                .any(|p| p.host_port.is_some_and(|h| h != 0))
            {
                bad.push(format!("{} uses host ports", c.name));
            }
        }
        bad
    }

    fn spec<'a>(
        run: &'a AgentRun,
        agent: &'a Agent,
        project: &'a Project,
        settings: &'a Settings,
    ) -> AttemptSpec<'a> {
        AttemptSpec {
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

    #[test]
    fn the_pod_passes_the_restricted_pod_security_profile_and_is_locked_down() {
        let (run, agent, project) = fixtures();
        let settings = Settings::default();
        let pod = spec(&run, &agent, &project, &settings).pod();
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(1200));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        let container = &spec.containers[0];
        assert_eq!(
            container
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/workspace", "/tmp", "/var/run/countersign"]);
        let api_key = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "COUNTERSIGN_PROVIDER_API_KEY")
            .expect("api key env");
        let selector = api_key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("openrouter", "api-key")
        );
        assert!(
            container
                .env
                .iter()
                .flatten()
                .all(|e| e.value.as_deref() != Some("tok")),
            "no token in env"
        );
    }

    #[test]
    fn a_privileged_pod_would_fail_the_restricted_check() {
        let (run, agent, project) = fixtures();
        let settings = Settings::default();
        let mut pod = spec(&run, &agent, &project, &settings).pod();
        let sc = pod.spec.as_mut().unwrap().containers[0]
            .security_context
            .as_mut()
            .unwrap();
        sc.allow_privilege_escalation = Some(true);
        sc.capabilities = None;
        assert_eq!(
            restricted_violations(&pod).len(),
            2,
            "the checker itself catches violations"
        );
    }

    #[test]
    fn children_are_owned_by_the_run_and_carry_no_gitops_tracking_metadata() {
        let (run, agent, project) = fixtures();
        let settings = Settings::default();
        let attempt = spec(&run, &agent, &project, &settings);
        let pod = attempt.pod();
        let secret = attempt.secret("tok");
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
            assert!(meta.annotations.is_none());
        }
        assert_eq!(secret.immutable, Some(true));
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["token"].0, b"tok");
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
    }

    #[test]
    fn the_network_policy_allows_dns_and_public_egress_only() {
        let (run, agent, project) = fixtures();
        let settings = Settings::default();
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
        let dns = egress[0].ports.as_ref().unwrap();
        assert!(dns.iter().all(|p| p.port == Some(IntOrString::Int(53))));
        let blocks: Vec<&IPBlock> = egress[1]
            .to
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|p| p.ip_block.as_ref())
            .collect();
        let v4 = blocks
            .iter()
            .find(|b| b.cidr == "0.0.0.0/0")
            .unwrap()
            .except
            .clone()
            .unwrap();
        for private in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
        ] {
            assert!(
                v4.contains(&private.to_owned()),
                "{private} must be blocked"
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
}
