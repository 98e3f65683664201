//! Anthropic's Messages API wire format: `POST {base_url}/v1/messages` with tool use.
//!
//! The conversation becomes `system` plus `messages` whose `content` is a list of blocks:
//! assistant `text` and `tool_use` blocks, and the results as `tool_result` blocks of the next
//! user message (consecutive user turns are merged, results first, as the API requires).
//! `max_tokens` is [`MAX_OUTPUT_TOKENS`] or what is left of the token budget, if less. A `529
//! overloaded` answer counts as unavailable (retried) like any 5xx.

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
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this module speaks.
pub const API_VERSION: &str = "2023-06-01";
/// Most output tokens asked for per reply.
pub const MAX_OUTPUT_TOKENS: u64 = 8192;

/// The `anthropic` provider: the tool loop over a Claude model.
pub type AnthropicAgent = ChatAgent<AnthropicModel>;

/// The `anthropic` provider for `spec` in `workspace`; `api_key` goes in `x-api-key`.
pub fn chat_provider(
    spec: &countersign_crds::agent::Provider,
    api_key: Option<SecretString>,
    headers: &[(String, String)],
    workspace: &Path,
) -> Result<AnthropicAgent, ProviderError> {
    let model = spec
        .model
        .clone()
        .ok_or_else(|| ProviderError::Refused(format!("provider {} has no model", spec.name)))?;
    let base = spec.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
    let auth = api_key.map_or(Auth::None, |key| Auth::Header("x-api-key", key));
    Ok(ChatAgent::new(
        AnthropicModel {
            http: HttpClient::new(auth, spec.retries()).with_headers(headers),
            url: format!("{}/v1/messages", base.trim_end_matches('/')),
            model,
        },
        workspace,
    ))
}

/// An Anthropic Messages API endpoint.
pub struct AnthropicModel {
    http: HttpClient,
    url: String,
    model: String,
}

impl ChatModel for AnthropicModel {
    fn complete(
        &mut self,
        conversation: &Conversation,
        tools: &[ToolSpec],
        limits: TurnLimits,
    ) -> Result<Reply, ProviderError> {
        let max_tokens = limits.max_output_tokens.clamp(1, MAX_OUTPUT_TOKENS);
        let body = request_body(&self.model, max_tokens, conversation, tools);
        let headers = [("anthropic-version", API_VERSION)];
        let answer = self
            .http
            .post_json(&self.url, &headers, &body, limits.deadline)?;
        let mut reply = parse_reply(answer)?;
        estimate_missing_usage(&mut reply, &body);
        Ok(reply)
    }
}

/// The request body.
pub fn request_body(
    model: &str,
    max_tokens: u64,
    conversation: &Conversation,
    tools: &[ToolSpec],
) -> Value {
    // (role, blocks); consecutive user blocks are merged into one message.
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| match messages.last_mut() {
        Some((last, existing)) if *last == role && role == "user" => existing.extend(blocks),
        _ => messages.push((role, blocks)),
    };
    for message in &conversation.messages {
        match message {
            Message::User(text) => push("user", vec![text_block(text)]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.trim().is_empty() || tool_calls.is_empty() {
                    blocks.push(text_block(text));
                }
                blocks.extend(tool_calls.iter().map(|call| {
                    // Anthropic sends objects, so arguments parse; anything else becomes `{}`.
                    let input = call.parsed_arguments().unwrap_or_else(|_| json!({}));
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
                }));
                push("assistant", blocks);
            }
            Message::ToolResults(results) => push(
                "user",
                results
                    .iter()
                    .map(|result| {
                        let content = if result.content.is_empty() {
                            "(no output)"
                        } else {
                            &result.content
                        };
                        json!({
                            "type": "tool_result",
                            "tool_use_id": result.call_id,
                            "content": content,
                            "is_error": result.is_error,
                        })
                    })
                    .collect(),
            ),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters}))
        .collect();
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "system": conversation.system,
        "messages": messages,
        "tools": tools,
    })
}

/// A text block; the API rejects empty ones.
fn text_block(text: &str) -> Value {
    let text = if text.trim().is_empty() {
        "(empty reply)"
    } else {
        text
    };
    json!({"type": "text", "text": text})
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// Parses a Messages API answer.
pub fn parse_reply(answer: Value) -> Result<Reply, ProviderError> {
    let answer: Answer = serde_json::from_value(answer)
        .map_err(|e| ProviderError::BadResponse(format!("not a message: {e}")))?;
    if answer.kind.as_deref().is_some_and(|kind| kind != "message") {
        return Err(ProviderError::BadResponse(format!(
            "expected a message, got {:?}",
            answer.kind.unwrap_or_default()
        )));
    }
    if answer.stop_reason.as_deref() == Some("max_tokens") {
        tracing::debug!("the reply was cut at max_tokens");
    }
    let mut text = Vec::new();
    let mut tool_calls = Vec::new();
    for (index, block) in answer.content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.extend(block.get("text").and_then(Value::as_str)),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("toolu_{index}"), str::to_owned),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                arguments: block
                    .get("input")
                    .map_or_else(String::new, Value::to_string),
            }),
            // Thinking and other blocks are not part of the tool loop.
            _ => {}
        }
    }
    let usage = answer.usage.unwrap_or(Usage {
        input_tokens: 0,
        output_tokens: 0,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: None,
    });
    let cached =
        usage.cache_creation_input_tokens.unwrap_or(0) + usage.cache_read_input_tokens.unwrap_or(0);
    Ok(Reply {
        text: text.join("\n"),
        tool_calls,
        input_tokens: usage.input_tokens + cached,
        output_tokens: usage.output_tokens,
    })
}

#[cfg(test)]
mod tests;
