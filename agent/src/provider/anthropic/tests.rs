use serde_json::json;

use super::*;
use crate::provider::chat::ToolResult;
use crate::tools::{Access, specs};

/// A Messages API answer with text and a tool use, as in Anthropic's tool-use documentation.
const TOOL_USE_ANSWER: &str = r#"{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-20250514",
  "content": [
    {"type": "text", "text": "I'll look at the file first."},
    {
      "type": "tool_use",
      "id": "toolu_01A09q90qw90lq917835lq9",
      "name": "read_file",
      "input": {"path": "src/main.rs", "start_line": 1, "end_line": 40}
    }
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 472,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 100,
    "output_tokens": 91,
    "service_tier": "standard"
  }
}"#;

#[test]
fn parses_text_and_tool_use_blocks() {
    let reply =
        parse_reply(serde_json::from_str(TOOL_USE_ANSWER).expect("fixture")).expect("parses");
    assert_eq!(reply.text, "I'll look at the file first.");
    assert_eq!(reply.tool_calls.len(), 1);
    let call = &reply.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_01A09q90qw90lq917835lq9", "read_file")
    );
    assert_eq!(
        call.parsed_arguments(),
        Ok(json!({"path": "src/main.rs", "start_line": 1, "end_line": 40}))
    );
    assert_eq!((reply.input_tokens, reply.output_tokens), (572, 91));
}

#[test]
fn parses_an_end_turn_answer_and_skips_unknown_blocks() {
    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "Done."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 2}
    });
    let reply = parse_reply(answer).expect("parses");
    assert_eq!(reply.text, "Done.");
    assert!(reply.tool_calls.is_empty());
    assert_eq!((reply.input_tokens, reply.output_tokens), (10, 2));
}

#[test]
fn rejects_what_is_not_a_message() {
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert!(
        matches!(parse_reply(error), Err(ProviderError::BadResponse(m)) if m.contains("\"error\""))
    );
    assert!(matches!(
        parse_reply(json!({"content": "text"})),
        Err(ProviderError::BadResponse(_))
    ));
    assert!(matches!(
        parse_reply(json!("hello")),
        Err(ProviderError::BadResponse(_))
    ));
}

#[test]
fn renders_blocks_and_merges_user_turns() {
    let conversation = Conversation {
        system: "You are a coding agent.".into(),
        messages: vec![
            Message::User("Fix the bug.".into()),
            Message::Assistant {
                text: "Reading.".into(),
                tool_calls: vec![
                    ToolCall {
                        id: "toolu_1".into(),
                        name: "read_file".into(),
                        arguments: r#"{"path":"a.rs"}"#.into(),
                    },
                    ToolCall {
                        id: "toolu_2".into(),
                        name: "finish".into(),
                        arguments: "not json".into(),
                    },
                ],
            },
            Message::ToolResults(vec![
                ToolResult {
                    call_id: "toolu_1".into(),
                    content: "fn a() {}".into(),
                    is_error: false,
                },
                ToolResult {
                    call_id: "toolu_2".into(),
                    content: String::new(),
                    is_error: true,
                },
            ]),
            Message::User("The tests fail.".into()),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![],
            },
            Message::User("call finish".into()),
        ],
    };
    let body = request_body(
        "claude-sonnet-4",
        4096,
        &conversation,
        &specs(Access::ReadWrite),
    );
    assert_eq!(body["model"], "claude-sonnet-4");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["system"], "You are a coding agent.");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Fix the bug."}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.rs"}},
                {"type": "tool_use", "id": "toolu_2", "name": "finish", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn a() {}", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "(no output)", "is_error": true},
                {"type": "text", "text": "The tests fail."},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "(empty reply)"}]},
            {"role": "user", "content": [{"type": "text", "text": "call finish"}]},
        ])
    );
    let tools = body["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 6);
    assert_eq!(tools[4]["name"], "apply_diff");
    assert_eq!(tools[4]["input_schema"]["required"], json!(["diff"]));
}
