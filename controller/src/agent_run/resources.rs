//! Desired state of one attempt: its Secret, Pod and NetworkPolicy, built as pure functions.
//!
//! The pod runs the agent's three steps from one image (see `docs/agent.md`): init container
//! `clone` (the read-only clone token), init container `work` (the model and verify
//! commands: no GitHub token, no provider key — only the attempt's gateway token), and the
//! main container `push` (the push token; it writes the result the controller reads). Each
//! Secret key is mounted only into the step that needs it, through its own volume with
//! `items`; the base commit goes from `clone` to `push` through a small emptyDir `work` does
//! not mount, and `push` gets a `/tmp` of its own. Every container is locked down (Pod
//! Security "restricted"): non-root, read-only root filesystem, no capabilities, no privilege
//! escalation, the runtime's default seccomp profile; no service account token,
//! `restartPolicy: Never`, `activeDeadlineSeconds` from the timeout. The pod carries the
//! SHA-256 of its gateway token, which is how the gateway recognises the attempt.
//!
//! The NetworkPolicy allows no ingress and egress only to DNS, the provider gateway's pods,
//! the git host's address blocks on its port, and the Agent's extra `egress`. Children carry
//! only our own labels, never the run's (so Argo CD, Flux and Helm tracking labels are not
//! copied), and are owned by the run so garbage collection removes them.

use std::collections::BTreeMap;

use countersign_crds::task_file::{self, CommitIdentity, Step, TaskFile, TaskRepository};
use countersign_crds::{Agent, AgentRun, Project};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::settings::{GitEgress, Settings};

/// Label naming the run a child belongs to.
pub const RUN_LABEL: &str = countersign_crds::attempt::RUN_LABEL;
/// Label with the attempt number of a child.
pub const ATTEMPT_LABEL: &str = countersign_crds::attempt::ATTEMPT_LABEL;
/// Label with the provider entry an attempt uses.
pub const PROVIDER_LABEL: &str = countersign_crds::attempt::PROVIDER_LABEL;
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

/// The tokens of one attempt, as they go into its Secret.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTokens<'a> {
    /// The clone step's read-only repository token.
    pub clone: &'a str,
    /// The push step's repository token.
    pub push: &'a str,
    /// The work step's gateway token.
    pub gateway: &'a str,
}

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
    /// Controller settings (default image and command, git host, gateway).
    pub settings: &'a Settings,
    /// Who the agent commits as (the GitHub App's bot account).
    pub commit_author: CommitIdentity,
    /// In control mode, the plan a human approved (absent while planning).
    pub approved_plan: Option<String>,
    /// For a follow-up: the branch of the pull request it works on (cloned, then pushed
    /// on top of).
    pub follow_up_branch: Option<String>,
    /// Guidance mode: the questions answered so far, and whether the agent may ask again.
    pub guidance: (Vec<countersign_crds::guidance::AnsweredQuestion>, bool),
    /// Whether the attempt proposes a breakdown ([`super::decide::breaks_down`]).
    pub breakdown: bool,
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

/// `<git url>/<owner>/<name>.git`.
fn repository_url(settings: &Settings, owner: &str, name: &str) -> String {
    format!(
        "{}/{owner}/{name}.git",
        settings.git_url.trim_end_matches('/')
    )
}

/// Mount paths of the pod's volumes.
const WORKSPACE: &str = task_file::WORKSPACE_DIR;
const TMP: &str = "/tmp";

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
        labels.insert(
            "app.kubernetes.io/name".into(),
            countersign_crds::attempt::AGENT_POD_APP.into(),
        );
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
        let fork = self.project.spec.pull_requests.head_repository.as_ref();
        TaskFile {
            version: task_file::TASK_FILE_VERSION,
            namespace: run.namespace().unwrap_or_default(),
            run: run.name_any(),
            attempt: self.number,
            repository: TaskRepository {
                owner: repository.owner.clone(),
                name: repository.name.clone(),
                default_branch: repository.default_branch.clone(),
                clone_url: repository_url(self.settings, &repository.owner, &repository.name),
                push_url: fork.map(|f| repository_url(self.settings, &f.owner, &f.name)),
            },
            branch: self
                .follow_up_branch
                .clone()
                .unwrap_or_else(|| task_file::branch_for(&run.name_any())),
            task: run.spec.task.clone(),
            mode: super::decide::run_mode(run, Some(self.agent)),
            provider: self.provider().clone(),
            limits: self.agent.spec.limits.clone(),
            guardrails: self.agent.spec.guardrails.clone(),
            verify: self.agent.spec.verify.clone(),
            commit_author: self.commit_author.clone(),
            approved_plan: self.approved_plan.clone(),
            breakdown: self.breakdown,
            extend_branch: self.follow_up_branch.is_some(),
            may_ask: self.guidance.1,
            answers: self.guidance.0.clone(),
            agent: Some(task_file::AgentIdentity {
                name: self.agent.name_any(),
                role: self.agent.spec.role,
                capabilities: self.agent.spec.capabilities.clone(),
                description: self.agent.spec.description.clone(),
            }),
        }
    }

    /// The attempt's Secret: the task document and the three tokens. Immutable, owned by the
    /// run; each key is mounted only into the step that reads it.
    pub fn secret(&self, tokens: &AttemptTokens<'_>) -> Secret {
        let task = serde_json::to_vec(&self.task_file()).expect("a task file always serialises");
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Secret {
            metadata: self.metadata(),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (task_file::TASK_KEY.to_owned(), ByteString(task)),
                (task_file::CLONE_TOKEN_KEY.to_owned(), bytes(tokens.clone)),
                (task_file::PUSH_TOKEN_KEY.to_owned(), bytes(tokens.push)),
                (
                    task_file::GATEWAY_TOKEN_KEY.to_owned(),
                    bytes(tokens.gateway),
                ),
            ])),
            ..Secret::default()
        }
    }

    /// One step's container.
    fn step(&self, step: Step, env: Vec<EnvVar>, mounts: Vec<VolumeMount>) -> Container {
        let agent = &self.agent.spec;
        let mut command = self.settings.agent_command.clone();
        command.push(step.as_str().to_owned());
        Container {
            name: step.as_str().into(),
            image: Some(
                agent
                    .image
                    .clone()
                    .unwrap_or_else(|| self.settings.agent_image.clone()),
            ),
            command: Some(command),
            env: Some(env),
            working_dir: Some(WORKSPACE.into()),
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
            volume_mounts: Some(mounts),
            termination_message_path: Some("/dev/termination-log".into()),
            // The work step's output is the model's: it never goes into the pod's status.
            termination_message_policy: Some(
                if step == Step::Work {
                    "File"
                } else {
                    "FallbackToLogsOnError"
                }
                .into(),
            ),
            ..Container::default()
        }
    }

    /// The attempt's restricted Pod, annotated with the SHA-256 of its gateway token.
    pub fn pod(&self, gateway_token_hash: &str) -> Pod {
        let agent = &self.agent.spec;
        let timeout = self.run.spec.timeout.unwrap_or(agent.limits.timeout);
        let task_file = format!("{}/{}", task_file::TASK_DIR, task_file::TASK_KEY);
        let token_in = |dir: &str| format!("{dir}/{}", task_file::TOKEN_FILE);
        let common = || {
            vec![
                env_value("COUNTERSIGN_RUN", &self.run.name_any()),
                env_value("COUNTERSIGN_ATTEMPT", &self.number.to_string()),
                env_value("COUNTERSIGN_TASK_FILE", &task_file),
                env_value("COUNTERSIGN_WORKSPACE", WORKSPACE),
            ]
        };
        let clone = {
            let mut env = common();
            env.extend([
                env_value(
                    "COUNTERSIGN_CLONE_TOKEN_FILE",
                    &token_in(task_file::CLONE_TOKEN_DIR),
                ),
                env_value("COUNTERSIGN_HANDOFF_DIR", task_file::HANDOFF_DIR),
                env_value("HOME", TMP),
            ]);
            self.step(
                Step::Clone,
                env,
                vec![
                    mount("workspace", WORKSPACE, false),
                    mount("tmp", TMP, false),
                    mount("task", task_file::TASK_DIR, true),
                    mount("clone-token", task_file::CLONE_TOKEN_DIR, true),
                    mount("handoff", task_file::HANDOFF_DIR, false),
                ],
            )
        };
        let work = {
            let mut env = common();
            env.extend([
                env_value(
                    "COUNTERSIGN_GATEWAY_TOKEN_FILE",
                    &token_in(task_file::GATEWAY_TOKEN_DIR),
                ),
                env_value(
                    task_file::GATEWAY_URL_ENV,
                    self.settings
                        .gateway
                        .as_ref()
                        .map_or("", |g| g.url.as_str()),
                ),
                env_value("HOME", WORKSPACE),
            ]);
            self.step(
                Step::Work,
                env,
                vec![
                    mount("workspace", WORKSPACE, false),
                    mount("tmp", TMP, false),
                    mount("task", task_file::TASK_DIR, true),
                    mount("gateway-token", task_file::GATEWAY_TOKEN_DIR, true),
                ],
            )
        };
        let push = {
            let mut env = common();
            env.extend([
                env_value(
                    "COUNTERSIGN_PUSH_TOKEN_FILE",
                    &token_in(task_file::PUSH_TOKEN_DIR),
                ),
                env_value("COUNTERSIGN_HANDOFF_DIR", task_file::HANDOFF_DIR),
                env_value("HOME", TMP),
            ]);
            self.step(
                Step::Push,
                env,
                vec![
                    mount("workspace", WORKSPACE, true),
                    mount("push-tmp", TMP, false),
                    mount("task", task_file::TASK_DIR, true),
                    mount("push-token", task_file::PUSH_TOKEN_DIR, true),
                    mount("handoff", task_file::HANDOFF_DIR, true),
                ],
            )
        };
        let mut metadata = self.metadata();
        metadata.annotations = Some(BTreeMap::from([(
            countersign_crds::attempt::GATEWAY_TOKEN_HASH_ANNOTATION.to_owned(),
            gateway_token_hash.to_owned(),
        )]));
        Pod {
            metadata,
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
                init_containers: Some(vec![clone, work]),
                containers: vec![push],
                volumes: Some(vec![
                    empty_dir("workspace", "4Gi", None),
                    empty_dir("tmp", "1Gi", None),
                    empty_dir("push-tmp", "256Mi", None),
                    empty_dir("handoff", "1Mi", Some("Memory")),
                    self.secret_volume("task", task_file::TASK_KEY, task_file::TASK_KEY),
                    self.secret_volume(
                        "clone-token",
                        task_file::CLONE_TOKEN_KEY,
                        task_file::TOKEN_FILE,
                    ),
                    self.secret_volume(
                        "push-token",
                        task_file::PUSH_TOKEN_KEY,
                        task_file::TOKEN_FILE,
                    ),
                    self.secret_volume(
                        "gateway-token",
                        task_file::GATEWAY_TOKEN_KEY,
                        task_file::TOKEN_FILE,
                    ),
                ]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// A volume showing only `key` of the attempt's Secret, as the file `path`.
    fn secret_volume(&self, name: &str, key: &str, path: &str) -> Volume {
        Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.name()),
                default_mode: Some(0o440),
                items: Some(vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    /// The attempt's NetworkPolicy: no ingress; egress to DNS, the gateway, the git host and
    /// the Agent's extra egress only.
    pub fn network_policy(&self) -> NetworkPolicy {
        let block = |cidr: &str, except: Vec<String>| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: (!except.is_empty()).then_some(except),
            }),
            ..NetworkPolicyPeer::default()
        };
        let tcp = |port: u16| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(port))),
            protocol: Some("TCP".into()),
            end_port: None,
        };
        let dns_port = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.into()),
            end_port: None,
        };
        let mut egress = vec![
            // Cluster DNS usually lives in a private range, so it is allowed by port.
            NetworkPolicyEgressRule {
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                to: None,
            },
        ];
        if let Some(gateway) = &self.settings.gateway {
            egress.push(NetworkPolicyEgressRule {
                ports: Some(vec![tcp(gateway.port)]),
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_owned(),
                            gateway.namespace.clone(),
                        )])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(gateway.pod_labels.clone()),
                        match_expressions: None,
                    }),
                    ip_block: None,
                }]),
            });
        }
        let git_port = url::Url::parse(&self.settings.git_url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(443);
        let git_peers = match &self.settings.git_egress {
            GitEgress::Cidrs(cidrs) => cidrs.iter().map(|c| block(c, Vec::new())).collect(),
            GitEgress::Public => vec![
                block(
                    "0.0.0.0/0",
                    BLOCKED_V4.iter().map(|s| (*s).to_owned()).collect(),
                ),
                block("::/0", BLOCKED_V6.iter().map(|s| (*s).to_owned()).collect()),
            ],
        };
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp(git_port)]),
            to: Some(git_peers),
        });
        for extra in &self.agent.spec.egress {
            egress.push(NetworkPolicyEgressRule {
                ports: (!extra.ports.is_empty())
                    .then(|| extra.ports.iter().map(|p| tcp(*p)).collect()),
                to: Some(extra.cidrs.iter().map(|c| block(c, Vec::new())).collect()),
            });
        }
        NetworkPolicy {
            metadata: self.metadata(),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    match_expressions: None,
                }),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![]),
                egress: Some(egress),
            }),
        }
    }
}

fn empty_dir(name: &str, size: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size.into())),
            medium: medium.map(str::to_owned),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
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
mod tests;
