use serde_json::json;

use super::*;
use crate::provider::chat::ToolResult;
use crate::tools::{Access, specs};

/// A chat completion with a tool call, as documented in OpenAI's API reference
/// (`content: null`, `arguments` as a JSON string).
const TOOL_CALL_ANSWER: &str = r#"{
  "id": "chatcmpl-abc123",
  "object": "chat.completion",
  "created": 1699896916,
  "model": "gpt-4o-mini",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "read_file",
              "arguments": "{\n\"path\": \"src/main.rs\",\n\"start_line\": 10\n}"
            }
          },
          {
            "id": "call_def456",
            "type": "function",
            "function": {"name": "search", "arguments": "{\"pattern\": \"fn main\""}
          }
        ],
        "refusal": null
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "completion_tokens_details": {"reasoning_tokens": 0}
  },
  "system_fingerprint": "fp_44709d6fcb"
}"#;

const TEXT_ANSWER: &str = r#"{
  "id": "chatcmpl-123",
  "object": "chat.completion",
  "created": 1677652288,
  "model": "gpt-4o",
  "choices": [{
    "index": 0,
    "message": {"role": "assistant", "content": "\n\nHello there, how may I assist you today?"},
    "logprobs": null,
    "finish_reason": "stop"
  }],
  "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
}"#;

fn conversation() -> Conversation {
    Conversation {
        system: "You are a coding agent.".into(),
        messages: vec![
            Message::User("Fix the bug.".into()),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "read_file".into(),
                    arguments: r#"{"path":"a.rs"}"#.into(),
                }],
            },
            Message::ToolResults(vec![ToolResult {
                call_id: "call_1".into(),
                content: "     1\tfn a() {}\n".into(),
                is_error: false,
            }]),
            Message::Assistant {
                text: "Thinking aloud.".into(),
                tool_calls: vec![],
            },
            Message::User("call finish".into()),
        ],
    }
}

#[test]
fn parses_tool_calls_with_string_arguments_and_null_content() {
    let reply =
        parse_reply(serde_json::from_str(TOOL_CALL_ANSWER).expect("fixture")).expect("parses");
    assert_eq!(reply.text, "");
    assert_eq!((reply.input_tokens, reply.output_tokens), (82, 17));
    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(reply.tool_calls[0].id, "call_abc123");
    assert_eq!(reply.tool_calls[0].name, "read_file");
    assert_eq!(
        reply.tool_calls[0].parsed_arguments(),
        Ok(json!({"path": "src/main.rs", "start_line": 10}))
    );
    // Invalid JSON is kept as written: the session reports it to the model.
    assert_eq!(reply.tool_calls[1].arguments, r#"{"pattern": "fn main""#);
    assert!(reply.tool_calls[1].parsed_arguments().is_err());
}

#[test]
fn parses_a_text_answer() {
    let reply = parse_reply(serde_json::from_str(TEXT_ANSWER).expect("fixture")).expect("parses");
    assert_eq!(reply.text, "\n\nHello there, how may I assist you today?");
    assert!(reply.tool_calls.is_empty());
    assert_eq!((reply.input_tokens, reply.output_tokens), (9, 12));
}

#[test]
fn tolerates_compatible_servers() {
    // Ollama-style: object arguments, no ids, no usage.
    let answer = json!({
        "choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "list_files", "arguments": {"path": "src"}}}
        ]}}]
    });
    let reply = parse_reply(answer).expect("parses");
    assert_eq!(reply.tool_calls[0].id, "call_0");
    assert_eq!(
        reply.tool_calls[0].parsed_arguments(),
        Ok(json!({"path": "src"}))
    );
    assert_eq!((reply.input_tokens, reply.output_tokens), (0, 0));
    // Content parts.
    let answer = json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]});
    assert_eq!(parse_reply(answer).expect("parses").text, "ab");
}

#[test]
fn rejects_answers_without_a_choice() {
    let error =
        parse_reply(json!({"error": {"message": "upstream failed"}})).expect_err("no choice");
    assert_eq!(
        error.to_string(),
        "the provider answered an invalid response: no choices; error: upstream failed"
    );
    assert!(matches!(
        parse_reply(json!({"choices": "x"})),
        Err(ProviderError::BadResponse(_))
    ));
    assert!(matches!(
        parse_reply(json!([1, 2])),
        Err(ProviderError::BadResponse(_))
    ));
    assert!(matches!(
        parse_reply(json!({"choices": [{}]})),
        Err(ProviderError::BadResponse(_))
    ));
}

#[test]
fn renders_the_conversation_and_tools() {
    let body = request_body("gpt-4o", &conversation(), &specs(Access::ReadOnly));
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["tool_choice"], "auto");
    assert!(body.get("max_tokens").is_none());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Fix the bug."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.rs\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "     1\tfn a() {}\n"},
            {"role": "assistant", "content": "Thinking aloud."},
            {"role": "user", "content": "call finish"},
        ])
    );
    let tools = body["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 4);
    assert_eq!(tools[1]["type"], "function");
    assert_eq!(tools[1]["function"]["name"], "read_file");
    assert_eq!(
        tools[1]["function"]["parameters"]["required"],
        json!(["path"])
    );
    assert!(
        tools[1]["function"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
}

#[test]
fn a_provider_needs_a_model() {
    let spec: countersign_crds::agent::Provider =
        serde_json::from_value(json!({"name": "local", "kind": "openai"})).expect("spec");
    let error = chat_provider(&spec, None, &[], std::path::Path::new("."))
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        "the provider refused the request: provider local has no model"
    );
}
