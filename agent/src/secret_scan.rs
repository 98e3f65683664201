//! Looks for credentials in the lines a change adds, before anything is committed: private
//! keys, GitHub, AWS, Slack, Stripe, OpenAI, Anthropic and Google keys, and JWTs. The input
//! is the workspace's [`ChangeSet`]; the guardrails turn a finding into a violation.
//!
//! A false positive fails the whole run and there is no way to mark a line as safe, so
//! every pattern is specific: a vendor prefix with an exact shape, placeholders and the
//! vendors' documented example values skipped, random-looking bodies required, and a PEM
//! header counted only with key material after it. Generic `password = "…"` assignments are
//! not looked for: test fixtures and examples are full of fake ones, and telling them from
//! real ones takes more than a line of context.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use crate::workspace::{AddedLine, ChangeSet};

/// A kind of credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// A PEM private key (RSA, EC, DSA, OpenSSH, PGP, PKCS#8).
    PrivateKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GitHubToken,
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// An AWS secret access key assigned to a variable named like one.
    AwsSecretAccessKey,
    /// A Slack token (`xoxb-…` and friends).
    SlackToken,
    /// A Stripe live secret or restricted key.
    StripeLiveKey,
    /// An OpenAI API key.
    OpenAiKey,
    /// An Anthropic API key.
    AnthropicKey,
    /// A Google API key.
    GoogleApiKey,
    /// A JSON Web Token with a signature.
    Jwt,
}

impl std::fmt::Display for SecretKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretKind::PrivateKey => "a private key",
            SecretKind::GitHubToken => "a GitHub token",
            SecretKind::AwsAccessKeyId => "an AWS access key id",
            SecretKind::AwsSecretAccessKey => "an AWS secret access key",
            SecretKind::SlackToken => "a Slack token",
            SecretKind::StripeLiveKey => "a Stripe live key",
            SecretKind::OpenAiKey => "an OpenAI API key",
            SecretKind::AnthropicKey => "an Anthropic API key",
            SecretKind::GoogleApiKey => "a Google API key",
            SecretKind::Jwt => "a JSON Web Token",
        })
    }
}

/// A credential found in an added line. It says where, never what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub path: String,
    /// The line number in the new file.
    pub line: u32,
    /// What it looks like.
    pub kind: SecretKind,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} adds {}", self.path, self.line, self.kind)
    }
}

/// One pattern: the kind it finds, the regex (its match is the secret, or group 1 is),
/// and a check on the match that rules out placeholders.
struct Pattern {
    kind: SecretKind,
    regex: &'static str,
    plausible: fn(&str) -> bool,
}

/// Most specific first: an Anthropic key also has the shape of an OpenAI one.
const PATTERNS: &[Pattern] = &[
    Pattern {
        kind: SecretKind::PrivateKey,
        regex: r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----",
        // Whether key material follows is decided with the next line; see `scan_lines`.
        plausible: |_| true,
    },
    Pattern {
        kind: SecretKind::GitHubToken,
        regex: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59,})\b",
        plausible: |m| random_enough(m.split_once('_').map_or(m, |(_, body)| body)),
    },
    Pattern {
        kind: SecretKind::AwsAccessKeyId,
        regex: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        plausible: |m| random_enough(&m[4..]),
    },
    Pattern {
        kind: SecretKind::AwsSecretAccessKey,
        regex: r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]>?\s*["']?([A-Za-z0-9/+]{40})(?:["'\s,;]|$)"#,
        plausible: |m| random_enough(m) && m.chars().any(|c| c.is_ascii_digit()),
    },
    Pattern {
        kind: SecretKind::SlackToken,
        regex: r"\bxox[abprs]-[0-9]{6,}-[0-9A-Za-z-]{8,}",
        plausible: |m| random_enough(&m[5..]),
    },
    Pattern {
        kind: SecretKind::StripeLiveKey,
        regex: r"\b[sr]k_live_[0-9A-Za-z]{20,}\b",
        plausible: |m| random_enough(&m[8..]),
    },
    Pattern {
        kind: SecretKind::AnthropicKey,
        regex: r"\bsk-ant-[a-z]+[0-9]*-[A-Za-z0-9_-]{40,}",
        plausible: |m| mixed(m) && random_enough(m),
    },
    Pattern {
        kind: SecretKind::OpenAiKey,
        regex: r"\bsk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{32,}",
        plausible: |m| !m.starts_with("sk-ant-") && mixed(m) && random_enough(m),
    },
    Pattern {
        kind: SecretKind::GoogleApiKey,
        regex: r"\bAIza[0-9A-Za-z_-]{35}(?:[^0-9A-Za-z_-]|$)",
        plausible: |m| random_enough(&m[4..39]),
    },
    Pattern {
        kind: SecretKind::Jwt,
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
        plausible: |m| random_enough(m.rsplit('.').next().unwrap_or("")),
    },
];

/// Values published in vendor documentation as examples; they are not anyone's secret.
const DOCUMENTED_EXAMPLES: &[&str] = &[
    "EXAMPLE",
    // The signature of jwt.io's sample token.
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
];

struct Scanner {
    any: RegexSet,
    each: Vec<Regex>,
}

static SCANNER: LazyLock<Scanner> = LazyLock::new(|| {
    let sources = PATTERNS.iter().map(|p| p.regex);
    Scanner {
        any: RegexSet::new(sources.clone()).expect("the secret patterns are valid regexes"),
        each: sources
            .map(|r| Regex::new(r).expect("the secret patterns are valid regexes"))
            .collect(),
    }
});

/// Every credential in the lines `changes` adds, file by file.
pub fn scan(changes: &ChangeSet) -> Vec<Finding> {
    changes
        .files
        .iter()
        .flat_map(|file| {
            scan_lines(&file.added_lines)
                .into_iter()
                .map(|(line, kind)| Finding {
                    path: file.path.clone(),
                    line,
                    kind,
                })
        })
        .collect()
}

/// `(line number, kind)` of every credential in `lines` (one file's added lines, in order),
/// at most one per line.
pub fn scan_lines(lines: &[AddedLine]) -> Vec<(u32, SecretKind)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines
            .get(i + 1)
            .filter(|next| Some(next.number) == line.number.checked_add(1))
            .map(|next| next.text.as_str());
        let first = matches(&line.text).into_iter().find(|&(kind, _, end)| {
            kind != SecretKind::PrivateKey || key_material_follows(&line.text[end..], next)
        });
        if let Some((kind, _, _)) = first {
            found.push((line.number, kind));
        }
    }
    found
}

/// `text` with every credential replaced by `[redacted: <kind>]`, for output that leaves
/// the pod (a command's summary, a verify command's output). A PEM private key is redacted
/// from its header to its `-----END` line.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        if in_key {
            in_key = !content.contains("-----END ");
            out.push_str(&line[content.len()..]);
            continue;
        }
        let mut spans = matches(line);
        spans.sort_by_key(|&(_, start, _)| start);
        let mut at = 0;
        for (kind, start, end) in spans {
            if start < at {
                continue;
            }
            out.push_str(&line[at..start]);
            out.push_str(&format!("[redacted: {kind}]"));
            at = end;
            if kind == SecretKind::PrivateKey {
                in_key = !content[end..].contains("-----END ");
                at = content.len();
                break;
            }
        }
        out.push_str(&line[at..]);
    }
    out
}

/// `(kind, start, end)` of each plausible match in `text`, pattern by pattern.
fn matches(text: &str) -> Vec<(SecretKind, usize, usize)> {
    let scanner = &*SCANNER;
    let mut found = Vec::new();
    for index in scanner.any.matches(text).iter() {
        let pattern = &PATTERNS[index];
        for captures in scanner.each[index].captures_iter(text) {
            let Some(secret) = captures.get(1).or_else(|| captures.get(0)) else {
                continue;
            };
            let value = secret.as_str().trim_end_matches(|c: char| {
                !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '+'))
            });
            if DOCUMENTED_EXAMPLES.iter().any(|e| value.contains(e)) || !(pattern.plausible)(value)
            {
                continue;
            }
            found.push((pattern.kind, secret.start(), secret.start() + value.len()));
        }
    }
    found
}

/// Whether a PEM header is followed by key material: base64 on the rest of its line (a
/// key pasted into a string with `\n` escapes) or on the next line, or PEM headers
/// (`Proc-Type:`). Code that only looks for the header (`starts_with("-----BEGIN …")`)
/// has neither.
fn key_material_follows(rest_of_line: &str, next_line: Option<&str>) -> bool {
    let base64_run = |s: &str| {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .any(|run| run.len() >= 40)
    };
    let rest = rest_of_line.replace("\\n", " ").replace("\\r", " ");
    base64_run(&rest)
        || next_line.is_some_and(|next| {
            let next = next.trim();
            next.starts_with("Proc-Type:") || base64_run(next)
        })
}

/// Whether `s` has as many distinct characters as random data of its length would:
/// rules out `ghp_XXXX…`, `AKIA0000…` and other placeholders.
fn random_enough(s: &str) -> bool {
    let mut seen = [false; 128];
    let mut distinct = 0;
    for b in s.bytes().filter(u8::is_ascii) {
        if !seen[b as usize] {
            seen[b as usize] = true;
            distinct += 1;
        }
    }
    distinct >= (s.len() / 3).clamp(5, 12)
}

/// Whether `s` has upper-case letters, lower-case letters and digits, as API keys do and
/// long kebab-case identifiers (`sk-some-long-css-class-name`) do not.
fn mixed(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && s.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests;
