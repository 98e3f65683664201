//! What the tour plays: the sample repository and issue, the manifests, and the scripted
//! model session (the tool calls a real model would make to fix the issue).

use serde_json::{Value, json};

use crate::model::Step;

/// The model's API key (held in the `model` Secret, checked by the scripted model).
pub const MODEL_KEY: &str = "sk-demo-model-key";
/// The default RiskPolicy shipped in `policies/manifests/`.
pub const DEFAULT_POLICY: &str =
    include_str!("../../../../policies/manifests/default-riskpolicy.yaml");
/// The issue the tour labels.
pub const ISSUE_TITLE: &str = "Return 404 for unknown invoices";
/// Its body.
pub const ISSUE_BODY: &str = "`GET /invoices/{id}` answers 200 with an empty body for ids that do not exist. It should \
     answer 404.";

/// The sample repository's first commit.
pub const REPOSITORY_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        "# shop\n\nThe invoices service of the Countersign demo.\n",
    ),
    (
        "src/invoices.rs",
        "pub fn find(id: u64) -> Option<Invoice> {\n    None\n}\n\npub struct Invoice {\n    pub id: u64,\n}\n",
    ),
    (
        "src/http.rs",
        "pub fn status_for(found: bool) -> u16 {\n    200\n}\n",
    ),
];

/// The model session: look around, read the handler, fix it, finish.
pub fn change() -> Vec<Step> {
    vec![
        Step::ToolCalls(vec![("list_files".into(), json!({}))]),
        Step::ToolCalls(vec![
            ("read_file".into(), json!({"path": "src/http.rs"})),
            ("search".into(), json!({"pattern": "fn find"})),
        ]),
        Step::ToolCalls(vec![(
            "apply_diff".into(),
            json!({"diff": "--- a/src/http.rs\n+++ b/src/http.rs\n@@ -1,3 +1,3 @@\n pub fn status_for(found: bool) -> u16 {\n-    200\n+    if found { 200 } else { 404 }\n }\n"}),
        )]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": "`status_for` now answers 404 when the invoice does not exist."}),
        )]),
    ]
}

/// The demo Project: `ai:backend` on issues starts the `backend` agent; developers and a tech
/// lead approve.
pub fn project(namespace: &str, installation: u64) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "repository": {"owner": "acme", "name": "shop"},
            "installation": {"id": installation},
            "triggers": {"minPermission": "write", "labels": [
                {"label": "ai:backend", "agent": {"name": "backend"}}
            ]},
            "roles": [
                {"role": "developer", "users": [{"login": "dev", "id": 102}]},
                {"role": "tech_lead", "users": [{"login": "lead", "id": 103}]}
            ],
            "riskPolicyRef": {"name": "default"}
        }
    })
}

/// The demo Agent on the scripted OpenAI-compatible model.
pub fn agent(namespace: &str, base_url: &str) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "backend", "namespace": namespace},
        "spec": {
            "role": "backend",
            "description": "Fixes backend issues in the demo repository.",
            "providers": [{
                "name": "scripted-model", "kind": "openai", "model": "demo-model",
                "baseUrl": base_url,
                "apiKeySecretRef": {"name": "model", "key": "api-key"},
                "inputPricePerMillion": "3", "outputPricePerMillion": "15"
            }],
            "limits": {"timeout": "5m", "maxTurns": 20}
        }
    })
}
