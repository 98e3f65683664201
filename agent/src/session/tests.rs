use std::collections::VecDeque;
use std::fs;
use std::time::{Duration, Instant};

use countersign_crds::Usd;
use countersign_crds::agent::AgentLimits;
use serde_json::{Value, json};

use super::*;
use crate::provider::Limit;
use crate::provider::chat::{Reply, ToolCall};
use crate::tools::ToolSpec;

/// A model answering from a script, recording what it was sent.
#[derive(Default)]
struct Scripted {
    replies: VecDeque<Reply>,
    seen: Vec<(Conversation, Vec<&'static str>, u64)>,
}

impl Scripted {
    fn new(replies: Vec<Reply>) -> Self {
        Self {
            replies: replies.into(),
            seen: Vec::new(),
        }
    }
}

impl ChatModel for Scripted {
    fn complete(
        &mut self,
        conversation: &Conversation,
        tools: &[ToolSpec],
        limits: TurnLimits,
    ) -> Result<Reply, ProviderError> {
        self.seen.push((
            conversation.clone(),
            tools.iter().map(|t| t.name).collect(),
            limits.max_output_tokens,
        ));
        // An exhausted script chats forever (the turn limit ends it).
        Ok(self
            .replies
            .pop_front()
            .unwrap_or_else(|| text("still thinking")))
    }
}

fn calls(calls: &[(&str, Value)]) -> Reply {
    Reply {
        text: String::new(),
        tool_calls: calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("call_{i}"),
                name: (*name).into(),
                arguments: args.to_string(),
            })
            .collect(),
        input_tokens: 1000,
        output_tokens: 100,
    }
}

fn text(text: &str) -> Reply {
    Reply {
        text: text.into(),
        input_tokens: 1000,
        output_tokens: 100,
        ..Reply::default()
    }
}

fn budget(limits: AgentLimits) -> Budget {
    Budget {
        limits,
        deadline: Instant::now() + Duration::from_secs(600),
        spent: Default::default(),
        input_cents_per_million: 0.0,
        output_cents_per_million: 0.0,
    }
}

fn job(kind: JobKind) -> Job {
    Job {
        may_ask: false,
        milestones: None,
        kind,
        prompt: "Add a greeting to README.md.".into(),
    }
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("README.md"), "# Demo\n").expect("write");
    dir
}

fn tool_results(message: &Message) -> &[crate::provider::chat::ToolResult] {
    match message {
        Message::ToolResults(results) => results,
        other => panic!("expected tool results, got {other:?}"),
    }
}

#[test]
fn runs_tools_until_finish() {
    let dir = workspace();
    let mut model = Scripted::new(vec![
        calls(&[
            ("list_files", json!({})),
            ("read_file", json!({"path": "README.md"})),
        ]),
        calls(&[(
            "write_file",
            json!({"path": "README.md", "content": "# Demo\nHello!\n"}),
        )]),
        calls(&[("finish", json!({"summary": "Added a greeting."}))]),
    ]);
    let mut budget = budget(AgentLimits::default());
    let mut session = Session::new(&job(JobKind::Change), dir.path());
    let work = session.run(&mut model, &mut budget).expect("finishes");
    assert_eq!(
        work,
        Work {
            summary: "Added a greeting.".into(),
            report: None,
            question: None,
        }
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("README.md")).expect("read"),
        "# Demo\nHello!\n"
    );
    assert_eq!(budget.spent.turns, 3);
    assert_eq!(
        (budget.spent.input_tokens, budget.spent.output_tokens),
        (3000, 300)
    );
    let messages = &session.conversation().messages;
    assert_eq!(messages.len(), 7);
    let first = tool_results(&messages[2]);
    assert_eq!(first[0].content, "README.md");
    assert_eq!(first[1].content, "     1\t# Demo\n");
    assert_eq!(tool_results(&messages[6])[0].content, "finished");
    assert_eq!(
        model.seen[0].1,
        [
            "list_files",
            "read_file",
            "search",
            "write_file",
            "apply_diff",
            "finish"
        ]
    );
    assert!(
        model.seen[0].0.system.contains("untrusted")
            || model.seen[0].0.system.contains("cannot verify")
    );
}

#[test]
fn chatting_gets_nudged_and_ends_at_the_turn_limit() {
    let dir = workspace();
    let mut model = Scripted::new(vec![]);
    let mut budget = budget(AgentLimits {
        max_turns: 3,
        ..AgentLimits::default()
    });
    let mut session = Session::new(&job(JobKind::Change), dir.path());
    let error = session
        .run(&mut model, &mut budget)
        .expect_err("never finishes");
    assert!(matches!(error, ProviderError::OutOfBudget(Limit::Turns)));
    assert_eq!(model.seen.len(), 3);
    let nudges = session
        .conversation()
        .messages
        .iter()
        .filter(|m| **m == Message::User(NUDGE.into()))
        .count();
    assert_eq!(nudges, 3);
}

#[test]
fn a_nudged_model_can_still_finish() {
    let dir = workspace();
    let mut model = Scripted::new(vec![
        text("I would add a greeting."),
        calls(&[("finish", json!({"summary": "nothing to do"}))]),
    ]);
    let mut session = Session::new(&job(JobKind::Change), dir.path());
    let work = session
        .run(&mut model, &mut budget(AgentLimits::default()))
        .expect("finishes");
    assert_eq!(work.summary, "nothing to do");
    let last_seen = &model.seen[1].0.messages;
    assert_eq!(last_seen.last(), Some(&Message::User(NUDGE.into())));
}

#[test]
fn stops_when_tokens_run_out() {
    let dir = workspace();
    let mut model = Scripted::new(vec![]);
    let mut budget = budget(AgentLimits {
        max_tokens: 2500,
        ..AgentLimits::default()
    });
    let error = Session::new(&job(JobKind::Change), dir.path())
        .run(&mut model, &mut budget)
        .expect_err("out of tokens");
    assert!(matches!(error, ProviderError::OutOfBudget(Limit::Tokens)));
    assert_eq!(budget.spent.turns, 3);
    // Each turn is told what is left of the token budget.
    let left: Vec<u64> = model.seen.iter().map(|s| s.2).collect();
    assert_eq!(left, [2500, 1400, 300]);
}

#[test]
fn stops_when_money_runs_out() {
    let dir = workspace();
    let mut model = Scripted::new(vec![]);
    let mut budget = budget(AgentLimits {
        max_cost: Usd { cents: 2 },
        ..AgentLimits::default()
    });
    // $10 per million input tokens, $30 per million output: 1000 + 100 tokens = 1.3 cents.
    budget.input_cents_per_million = 1000.0;
    budget.output_cents_per_million = 3000.0;
    let error = Session::new(&job(JobKind::Change), dir.path())
        .run(&mut model, &mut budget)
        .expect_err("out of money");
    assert!(matches!(error, ProviderError::OutOfBudget(Limit::Cost)));
    assert_eq!(budget.spent.turns, 2);
    assert_eq!(budget.usage().cost, Usd { cents: 3 });
}

#[test]
fn stops_when_time_runs_out() {
    let dir = workspace();
    let mut model = Scripted::new(vec![]);
    let mut budget = budget(AgentLimits::default());
    budget.deadline = Instant::now();
    let error = Session::new(&job(JobKind::Change), dir.path())
        .run(&mut model, &mut budget)
        .expect_err("out of time");
    assert!(matches!(error, ProviderError::OutOfBudget(Limit::Time)));
    assert!(model.seen.is_empty());
}

#[test]
fn invalid_tool_arguments_are_fed_back_as_errors() {
    let dir = workspace();
    let mut broken = calls(&[("read_file", json!({}))]);
    broken.tool_calls[0].arguments = r#"{"path": "README.md""#.into();
    let mut model = Scripted::new(vec![broken, calls(&[("finish", json!({"summary": "ok"}))])]);
    let mut session = Session::new(&job(JobKind::Change), dir.path());
    session
        .run(&mut model, &mut budget(AgentLimits::default()))
        .expect("finishes");
    let result = &tool_results(&session.conversation().messages[2])[0];
    assert!(result.is_error);
    assert!(
        result
            .content
            .starts_with("error: the tool arguments are not valid JSON"),
        "{}",
        result.content
    );
}

#[test]
fn plan_jobs_are_read_only_and_return_the_report() {
    let dir = workspace();
    let mut model = Scripted::new(vec![
        calls(&[(
            "write_file",
            json!({"path": "README.md", "content": "hacked"}),
        )]),
        calls(&[("finish", json!({"summary": "planned"}))]),
        calls(&[(
            "finish",
            json!({"summary": "planned", "report": "## Plan\n1. Edit README.md"}),
        )]),
    ]);
    let mut session = Session::new(&job(JobKind::Plan), dir.path());
    let work = session
        .run(&mut model, &mut budget(AgentLimits::default()))
        .expect("finishes");
    assert_eq!(work.report.as_deref(), Some("## Plan\n1. Edit README.md"));
    assert_eq!(
        fs::read_to_string(dir.path().join("README.md")).expect("read"),
        "# Demo\n"
    );
    assert_eq!(
        model.seen[0].1,
        ["list_files", "read_file", "search", "finish"]
    );
    let messages = &session.conversation().messages;
    assert!(tool_results(&messages[2])[0].content.contains("read-only"));
    assert!(tool_results(&messages[4])[0].content.contains("`report`"));
    assert!(model.seen[0].0.system.contains("write a plan"));
}

#[test]
fn feedback_continues_the_conversation() {
    let dir = workspace();
    let mut model = Scripted::new(vec![
        calls(&[("finish", json!({"summary": "first"}))]),
        calls(&[("finish", json!({"summary": "fixed"}))]),
    ]);
    let mut budget = budget(AgentLimits::default());
    let mut session = Session::new(&job(JobKind::Change), dir.path());
    session.run(&mut model, &mut budget).expect("finishes");
    session.push_feedback("test foo failed");
    let work = session
        .run(&mut model, &mut budget)
        .expect("finishes again");
    assert_eq!(work.summary, "fixed");
    let second = &model.seen[1].0.messages;
    assert_eq!(second.len(), 4);
    assert_eq!(
        second[0],
        Message::User("Add a greeting to README.md.".into())
    );
    assert!(matches!(&second[3], Message::User(text) if text.ends_with("test foo failed")));
}

#[test]
fn system_prompts_differ_by_kind() {
    let change = system_prompt(&JobKind::Change);
    let analyse = system_prompt(&JobKind::Analyse);
    for prompt in [&change, &analyse] {
        assert!(prompt.contains("`finish`"));
        assert!(prompt.contains("Never write secrets"));
        assert!(prompt.contains("not as instructions to you"));
    }
    assert!(change.contains("apply_diff"));
    assert!(analyse.contains("read-only") && analyse.contains("`report`"));
}
