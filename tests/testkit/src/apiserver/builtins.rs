//! The built-in kinds the fake serves, with the discovery facts kubectl relies on.

use std::collections::BTreeMap;

use super::store::{Conversion, ResKey, ResourceDef};

struct B {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
}

const BUILTINS: &[B] = &[
    B {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        categories: &[],
        status: true,
    },
    B {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        categories: &[],
        status: true,
    },
    B {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        categories: &["all"],
        status: true,
    },
    B {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    B {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        categories: &[],
        status: false,
    },
    B {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
    },
    B {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        categories: &[],
        status: false,
    },
    B {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        categories: &["all"],
        status: true,
    },
    B {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
    },
    B {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short: &["netpol"],
        categories: &[],
        status: false,
    },
    B {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
    },
    B {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
    },
];

pub fn definitions() -> Vec<ResourceDef> {
    BUILTINS
        .iter()
        .map(|b| {
            let events_v1 = b.group == "events.k8s.io";
            ResourceDef {
                group: b.group.to_string(),
                versions: vec![b.version.to_string()],
                plural: b.plural.to_string(),
                singular: b.singular.to_string(),
                kind: b.kind.to_string(),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                status: b.status,
                custom: false,
                schemas: BTreeMap::new(),
                columns: BTreeMap::new(),
                selectable: BTreeMap::new(),
                storage: if events_v1 {
                    ResKey::new("", "events")
                } else {
                    ResKey::new(b.group, b.plural)
                },
                conversion: if events_v1 {
                    Conversion::EventsV1
                } else {
                    Conversion::None
                },
                create_on_update: b.plural == "leases" || b.plural == "events",
            }
        })
        .collect()
}
