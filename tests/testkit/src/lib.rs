//! Countersign's test kit: the fakes every test stands on.
//!
//! No kube-apiserver, kind cluster, Docker engine or GitHub is reachable in CI, so this crate
//! provides stand-ins that speak the real wire protocols:
//!
//! - [`apiserver`]: a fake kube-apiserver over plain HTTP on 127.0.0.1 that unmodified
//!   `kube::Client`, watchers, `Controller`s and the real `kubectl` drive.
//! - [`github`]: the test GitHub App key pair and signed webhook deliveries.
//! - [`model`]: a scripted chat model serving the OpenAI and Anthropic wire formats, for the
//!   agent's chat providers.
//! - [`schema`]: structural-schema pruning, defaulting and validation (types, enums, ranges,
//!   CEL `x-kubernetes-validations`) of objects against a CRD's `openAPIV3Schema`, as the real
//!   apiserver does on every write.
//!
//! The `countersign-sandbox` binary serves these fakes on loopback ports so the real
//! `countersign` binaries and `kubectl` can be run against them from a shell.

pub mod apiserver;
pub mod cluster;
pub mod controlplane;
pub mod demo;
pub mod github;
pub mod kubelet;
pub mod model;
pub mod schema;
