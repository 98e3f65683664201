//! Token counts from the provider's own answers: the `usage` of a JSON answer, or the usage
//! events of a stream (OpenAI's final chunk, which the gateway asks for with
//! `stream_options.include_usage`; Anthropic's `message_start` and `message_delta`). When a
//! provider reports nothing, the gateway estimates (a token per four bytes) rather than let
//! the request go uncounted. Pure and incremental: the stream parser is fed chunks as they
//! pass through.

use serde_json::Value;

use crate::plan::Protocol;

/// Tokens of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Whether the provider reported them (otherwise they are estimated).
    pub reported: bool,
}

/// Bytes per token when estimating.
pub const BYTES_PER_TOKEN: u64 = 4;

/// An estimate from the request's and the answer's sizes.
pub fn estimate(request_bytes: u64, answer_bytes: u64) -> Tokens {
    Tokens {
        input: request_bytes.div_ceil(BYTES_PER_TOKEN),
        output: answer_bytes.div_ceil(BYTES_PER_TOKEN),
        reported: false,
    }
}

fn number(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// The usage in a (non-streamed) JSON answer.
pub fn from_json(protocol: Protocol, body: &[u8]) -> Option<Tokens> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let usage = v.get("usage")?;
    Some(match protocol {
        Protocol::OpenAi => Tokens {
            input: number(usage, "/prompt_tokens"),
            output: number(usage, "/completion_tokens"),
            reported: true,
        },
        Protocol::Anthropic => Tokens {
            // Cache reads and writes are input too (priced differently by Anthropic; counted
            // at the input price here, which errs on the high side for reads).
            input: number(usage, "/input_tokens")
                + number(usage, "/cache_creation_input_tokens")
                + number(usage, "/cache_read_input_tokens"),
            output: number(usage, "/output_tokens"),
            reported: true,
        },
    })
}

/// Largest incomplete line kept while parsing a stream (longer lines are skipped).
const MAX_LINE: usize = 1024 * 1024;

/// Usage seen in a server-sent event stream, fed chunk by chunk.
#[derive(Debug)]
pub struct StreamUsage {
    protocol: Protocol,
    line: Vec<u8>,
    skipping: bool,
    tokens: Tokens,
    bytes: u64,
}

impl StreamUsage {
    /// A parser for a stream of `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            line: Vec::new(),
            skipping: false,
            tokens: Tokens::default(),
            bytes: 0,
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        for &b in chunk {
            if b == b'\n' {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line);
                }
                self.line.clear();
                self.skipping = false;
            } else if !self.skipping {
                if self.line.len() >= MAX_LINE {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.push(b);
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
            return;
        };
        match self.protocol {
            Protocol::OpenAi => {
                if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                    self.tokens.input = number(usage, "/prompt_tokens");
                    self.tokens.output = number(usage, "/completion_tokens");
                    self.tokens.reported = true;
                }
            }
            Protocol::Anthropic => match event.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    let usage = event.pointer("/message/usage").cloned().unwrap_or_default();
                    self.tokens.input = number(&usage, "/input_tokens")
                        + number(&usage, "/cache_creation_input_tokens")
                        + number(&usage, "/cache_read_input_tokens");
                    self.tokens.output = self.tokens.output.max(number(&usage, "/output_tokens"));
                    self.tokens.reported = true;
                }
                Some("message_delta") => {
                    // Cumulative: the last one counts.
                    let output = number(&event, "/usage/output_tokens");
                    self.tokens.output = self.tokens.output.max(output);
                    self.tokens.reported = true;
                }
                _ => {}
            },
        }
    }

    /// The tokens of the stream so far (estimated from `request_bytes` and the bytes seen
    /// when the provider reported nothing).
    pub fn tokens(&self, request_bytes: u64) -> Tokens {
        if self.tokens.reported {
            self.tokens
        } else {
            estimate(request_bytes, self.bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_report_usage_in_each_protocol() {
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        assert_eq!(
            from_json(Protocol::OpenAi, openai),
            Some(Tokens {
                input: 12,
                output: 3,
                reported: true
            })
        );
        let anthropic =
            br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(
            from_json(Protocol::Anthropic, anthropic),
            Some(Tokens {
                input: 15,
                output: 7,
                reported: true
            })
        );
        assert_eq!(from_json(Protocol::OpenAi, b"not json"), None);
        assert_eq!(from_json(Protocol::OpenAi, br#"{"choices":[]}"#), None);
    }

    #[test]
    fn streams_are_counted_across_chunk_boundaries() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":2}}\n\n\
                      data: [DONE]\n\n";
        let mut parser = StreamUsage::new(Protocol::OpenAi);
        for chunk in stream.as_bytes().chunks(7) {
            parser.feed(chunk);
        }
        assert_eq!(
            parser.tokens(0),
            Tokens {
                input: 40,
                output: 2,
                reported: true
            }
        );

        let anthropic = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\r\n\r\n\
                         event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\r\n\r\n";
        let mut parser = StreamUsage::new(Protocol::Anthropic);
        for chunk in anthropic.as_bytes().chunks(5) {
            parser.feed(chunk);
        }
        assert_eq!(
            parser.tokens(0),
            Tokens {
                input: 9,
                output: 30,
                reported: true
            }
        );
    }

    #[test]
    fn silent_providers_are_estimated_and_huge_lines_skipped() {
        let mut parser = StreamUsage::new(Protocol::OpenAi);
        parser.feed(&vec![b'x'; MAX_LINE + 10]);
        parser.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
        assert!(
            parser.tokens(0).reported,
            "a line after a skipped one still counts"
        );
        let mut quiet = StreamUsage::new(Protocol::OpenAi);
        quiet.feed(b"data: {\"choices\":[]}\n\n");
        assert_eq!(
            quiet.tokens(100),
            Tokens {
                input: 25,
                output: 6,
                reported: false
            }
        );
    }
}
