//! The OpenAI-compatible chat completions wire format (OpenAI, OpenRouter, vLLM, Ollama):
//! `POST {base_url}/chat/completions` with function tools.
//!
//! The conversation becomes `messages` (system, user, assistant with `tool_calls`, one `tool`
//! message per result); tools become `{"type": "function", "function": {…}}`. The reply's
//! `choices[0].message` gives the text (`content`, possibly `null`) and the tool calls, whose
//! `arguments` is a JSON *string* that is kept as written: invalid JSON is reported to the
//! model by the session, not treated as a broken answer. Servers that report no `usage` get
//! an estimate so the token budget still applies.

use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ProviderError;
use super::chat::{
    Auth, ChatAgent, ChatModel, Conversation, HttpClient, Message, Reply, ToolCall, TurnLimits,
    estimate_missing_usage,
};
use crate::tools::ToolSpec;

/// The default endpoint when the spec has no `baseUrl`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The `openai` provider: the tool loop over an OpenAI-compatible model.
pub type OpenAiAgent = ChatAgent<OpenAiModel>;

/// The `openai` provider for `spec` in `workspace`. `api_key` is sent as a bearer token when
/// given (local servers need none).
pub fn chat_provider(
    spec: &countersign_crds::agent::Provider,
    api_key: Option<SecretString>,
    headers: &[(String, String)],
    workspace: &Path,
) -> Result<OpenAiAgent, ProviderError> {
    let model = spec
        .model
        .clone()
        .ok_or_else(|| ProviderError::Refused(format!("provider {} has no model", spec.name)))?;
    let base = spec.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
    let auth = api_key.map_or(Auth::None, Auth::Bearer);
    Ok(ChatAgent::new(
        OpenAiModel {
            http: HttpClient::new(auth, spec.retries()).with_headers(headers),
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model,
        },
        workspace,
    ))
}

/// An OpenAI-compatible chat completions endpoint.
pub struct OpenAiModel {
    http: HttpClient,
    url: String,
    model: String,
}

impl ChatModel for OpenAiModel {
    fn complete(
        &mut self,
        conversation: &Conversation,
        tools: &[ToolSpec],
        limits: TurnLimits,
    ) -> Result<Reply, ProviderError> {
        let body = request_body(&self.model, conversation, tools);
        let answer = self
            .http
            .post_json(&self.url, &[], &body, limits.deadline)?;
        let mut reply = parse_reply(answer)?;
        estimate_missing_usage(&mut reply, &body);
        Ok(reply)
    }
}

/// The request body. `max_tokens` is not sent: newer OpenAI models reject it (they take
/// `max_completion_tokens`, which compatible servers ignore), and the token budget is
/// enforced after every turn anyway.
pub fn request_body(model: &str, conversation: &Conversation, tools: &[ToolSpec]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": conversation.system})];
    for message in &conversation.messages {
        match message {
            Message::User(text) => messages.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                let mut entry = json!({
                    "role": "assistant",
                    "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
                });
                if !tool_calls.is_empty() {
                    entry["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments},
                            })
                        })
                        .collect();
                }
                messages.push(entry);
            }
            Message::ToolResults(results) => {
                for result in results {
                    let content = if result.content.is_empty() {
                        "(no output)"
                    } else {
                        &result.content
                    };
                    messages.push(
                        json!({"role": "tool", "tool_call_id": result.call_id, "content": content}),
                    );
                }
            }
        }
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            })
        })
        .collect();
    json!({"model": model, "messages": messages, "tools": tools, "tool_choice": "auto"})
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<AnswerToolCall>>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct AnswerToolCall {
    id: Option<String>,
    function: AnswerFunction,
}

#[derive(Deserialize)]
struct AnswerFunction {
    #[serde(default)]
    name: String,
    /// A JSON string per the spec; some compatible servers send an object.
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Parses a chat completion answer.
pub fn parse_reply(answer: Value) -> Result<Reply, ProviderError> {
    let error = answer.get("error").map(|e| {
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned()
    });
    let completion: Completion = serde_json::from_value(answer)
        .map_err(|e| ProviderError::BadResponse(format!("not a chat completion: {e}")))?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(ProviderError::BadResponse(match error {
            Some(message) => format!("no choices; error: {message}"),
            None => "no choices in the answer".into(),
        }));
    };
    let Some(message) = choice.message else {
        return Err(ProviderError::BadResponse(
            "the choice has no message".into(),
        ));
    };
    if choice.finish_reason.as_deref() == Some("length") {
        tracing::debug!("the reply was cut at the model's output limit");
    }
    let mut text = match message.content {
        Some(Value::String(text)) => text,
        // Some servers send content parts: [{"type": "text", "text": …}].
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    if text.is_empty() {
        text = message.refusal.unwrap_or_default();
    }
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: call.function.name,
            arguments: match call.function.arguments {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            },
        })
        .collect();
    let usage = completion.usage.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
    });
    Ok(Reply {
        text,
        tool_calls,
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
    })
}

#[cfg(test)]
mod tests;
