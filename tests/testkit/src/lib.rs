//! Countersign's test kit: the Kubernetes, GitHub and model every test stands on.
//!
//! No kind cluster, Docker engine or GitHub is reachable in CI, so this crate runs the real
//! Kubernetes control plane where it can and provides stand-ins that speak the real wire
//! protocols where it cannot:
//!
//! - [`controlplane`]: the real kube-apiserver, etcd and kube-controller-manager (built from
//!   Go modules by `scripts/controlplane`) on loopback ports, with RBAC, Pod Security
//!   admission and TokenRequest.
//! - [`cluster`]: the one place a test asks for Kubernetes: real or fake, chosen by
//!   `COUNTERSIGN_TEST_CONTROL_PLANE`, with per-test namespaces and kubelets.
//! - [`kubelet`]: a node for either apiserver that binds pods and runs them as processes.
//! - [`apiserver`]: a fake kube-apiserver over plain HTTP on 127.0.0.1 that unmodified
//!   `kube::Client`, watchers, `Controller`s and the real `kubectl` drive; for fault
//!   injection and speed.
//! - [`github`]: the test GitHub App key pair and signed webhook deliveries.
//! - [`model`]: a scripted chat model serving the OpenAI and Anthropic wire formats, for the
//!   agent's chat providers.
//! - [`pods`]: pod status written through the API as a kubelet would (Running, then
//!   terminated with an exit code and termination message), for tests that script pods.
//! - [`schema`]: structural-schema pruning, defaulting and validation (types, enums, ranges,
//!   CEL `x-kubernetes-validations`) of objects against a CRD's `openAPIV3Schema`, as the real
//!   apiserver does on every write.
//!
//! The `countersign-sandbox` binary serves these on loopback ports so the real
//! `countersign` binaries and `kubectl` can be run against them from a shell.

pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod controlplane;
pub mod demo;
pub mod github;
pub mod kubelet;
pub mod model;
pub mod pods;
pub mod schema;
pub mod tools;
