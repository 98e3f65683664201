//! What the tour plays: the sample repository and its two issues, the manifests, and the
//! scripted model sessions (the tool calls a real model would make): the backend Agent's fix
//! of issue #1, then the architect's breakdown of issue #2 and the backend and frontend
//! Agents' sub-tasks.

use serde_json::{Value, json};

use crate::model::Step;

/// The model's API key (held in the `model` Secret, checked by the scripted model).
pub const MODEL_KEY: &str = "sk-demo-model-key";
/// The default RiskPolicy shipped in `policies/manifests/`.
pub const DEFAULT_POLICY: &str =
    include_str!("../../../../policies/manifests/default-riskpolicy.yaml");
/// The issue the first scenario labels (#1).
pub const ISSUE_TITLE: &str = "Return 404 for unknown invoices";
/// Its body.
pub const ISSUE_BODY: &str = "`GET /invoices/{id}` answers 200 with an empty body for ids that do not exist. It should \
     answer 404.";
/// The issue the second scenario labels for the architect (#2): work for two Agents.
pub const BREAKDOWN_ISSUE_TITLE: &str = "Show each invoice's status";
/// Its body.
pub const BREAKDOWN_ISSUE_BODY: &str = "Invoices are open, paid or void, but neither the database nor the invoice page says \
     which. Store the status and show it on the page.";

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
    (
        "migrations/0001_invoices.sql",
        "CREATE TABLE invoices (\n    id BIGINT PRIMARY KEY\n);\n",
    ),
    (
        "web/invoice.html",
        "<h1>Invoice <span id=\"invoice-id\"></span></h1>\n",
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

/// The architect's session: look around, then propose two sub-tasks that run at once (no
/// `dependsOn`), one for the backend Agent and one for the frontend Agent.
pub fn breakdown() -> Vec<Step> {
    let breakdown = json!({"tasks": [
        {"id": "api", "title": "Store each invoice's status", "agent": "backend",
         "instructions": "Add migrations/0002_invoice_status.sql with a status column (open, \
                          paid or void) and a status field on Invoice."},
        {"id": "page", "title": "Show the status on the invoice page", "agent": "frontend",
         "instructions": "Show the invoice's status under its number in web/invoice.html."}
    ]});
    vec![
        Step::ToolCalls(vec![("list_files".into(), json!({}))]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({
                "summary": "Two sub-tasks: the status in the database, and on the invoice page.",
                "report": breakdown.to_string()
            }),
        )]),
    ]
}

/// The backend Agent's sub-task: a schema migration (scored critical by the default
/// RiskPolicy: data migrations are hard to undo) and the field it adds.
pub fn backend_subtask() -> Vec<Step> {
    vec![
        Step::ToolCalls(vec![("list_files".into(), json!({"path": "migrations"}))]),
        Step::ToolCalls(vec![
            (
                "write_file".into(),
                json!({"path": "migrations/0002_invoice_status.sql", "content": "ALTER TABLE invoices ADD COLUMN status TEXT NOT NULL DEFAULT 'open';\n"}),
            ),
            (
                "apply_diff".into(),
                json!({"diff": "--- a/src/invoices.rs\n+++ b/src/invoices.rs\n@@ -5,3 +5,4 @@\n pub struct Invoice {\n     pub id: u64,\n+    pub status: String,\n }\n"}),
            ),
        ]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": "Invoices have a status column (migration 0002) and field."}),
        )]),
    ]
}

/// The frontend Agent's sub-task: one line of the invoice page (an ordinary code change).
pub fn frontend_subtask() -> Vec<Step> {
    vec![
        Step::ToolCalls(vec![(
            "read_file".into(),
            json!({"path": "web/invoice.html"}),
        )]),
        Step::ToolCalls(vec![(
            "apply_diff".into(),
            json!({"diff": "--- a/web/invoice.html\n+++ b/web/invoice.html\n@@ -1,1 +1,2 @@\n <h1>Invoice <span id=\"invoice-id\"></span></h1>\n+<p>Status: <span id=\"invoice-status\"></span></p>\n"}),
        )]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": "The invoice page shows the invoice's status."}),
        )]),
    ]
}

/// The demo Project: `ai:backend` on issues starts the `backend` Agent, `ai:frontend` the
/// `frontend` Agent and `ai:plan` the `architect` (a breakdown may only name Agents the
/// triggers map); developers and a tech lead approve.
pub fn project(namespace: &str, installation: u64) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "repository": {"owner": "acme", "name": "shop"},
            "installation": {"id": installation},
            "triggers": {"minPermission": "write", "labels": [
                {"label": "ai:backend", "agent": {"name": "backend"}},
                {"label": "ai:frontend", "agent": {"name": "frontend"}},
                {"label": "ai:plan", "agent": {"name": "architect"}}
            ]},
            "roles": [
                {"role": "developer", "users": [{"login": "dev", "id": 102}]},
                {"role": "tech_lead", "users": [{"login": "lead", "id": 103}]}
            ],
            "riskPolicyRef": {"name": "default"}
        }
    })
}

/// One of the demo's Agents, each on its own scripted OpenAI-compatible model (`base_url`):
/// the fake answers from one queue, so Agents working at once must not share one.
pub fn agent(namespace: &str, name: &str, role: &str, description: &str, base_url: &str) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "role": role,
            "description": description,
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
