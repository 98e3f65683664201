//! Secrets in these tests are assembled at run time from a prefix and a pseudo-random body,
//! so no credential-shaped literal sits in the source (GitHub's push protection would
//! refuse the repository otherwise).

use super::*;
use crate::workspace::{ChangeStatus, FileChange};

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `len` characters of `alphabet`, deterministic per `seed`.
fn random(alphabet: &str, len: usize, seed: u64) -> String {
    let alphabet = alphabet.as_bytes();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            alphabet[(state >> 33) as usize % alphabet.len()] as char
        })
        .collect()
}

fn github_token(prefix: &str) -> String {
    format!("{prefix}_{}", random(ALNUM, 36, 1))
}

fn lines(texts: &[&str]) -> Vec<AddedLine> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| AddedLine {
            number: i as u32 + 1,
            text: (*text).to_owned(),
        })
        .collect()
}

fn kinds(text: &str) -> Vec<SecretKind> {
    scan_lines(&lines(&[text]))
        .into_iter()
        .map(|(_, k)| k)
        .collect()
}

fn assert_found(text: &str, kind: SecretKind) {
    assert_eq!(kinds(text), vec![kind], "in {text:?}");
}

fn assert_clean(text: &str) {
    assert_eq!(kinds(text), vec![], "in {text:?}");
}

fn pem(kind: &str) -> Vec<String> {
    vec![
        format!("-----BEGIN {kind}-----"),
        random(BASE64, 64, 7),
        random(BASE64, 64, 8),
        format!("-----END {kind}-----"),
    ]
}

#[test]
fn private_keys_are_found() {
    for kind in [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK",
    ] {
        let key = pem(kind);
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        assert_eq!(
            scan_lines(&lines(&key)),
            vec![(1, SecretKind::PrivateKey)],
            "{kind}"
        );
    }
    // A key pasted into a string literal on one line.
    let inline = format!(
        r#"const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----";"#,
        random(BASE64, 64, 9)
    );
    assert_found(&inline, SecretKind::PrivateKey);
    // Encrypted legacy PEM with headers.
    let legacy = ["-----BEGIN RSA PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED"];
    assert_eq!(scan_lines(&lines(&legacy)).len(), 1);
}

#[test]
fn code_and_docs_about_private_keys_are_not_secrets() {
    assert_clean("Paste the BEGIN PRIVATE KEY block into the Secret.");
    assert_clean("-----BEGIN PUBLIC KEY-----");
    assert_clean("-----BEGIN CERTIFICATE-----");
    let parser = [
        r#"if line.starts_with("-----BEGIN RSA PRIVATE KEY-----") {"#,
        "    return parse_rsa(lines);",
    ];
    assert_eq!(scan_lines(&lines(&parser)), vec![]);
    // The header as the last added line, the key material not part of the change.
    let cut = [AddedLine {
        number: 3,
        text: "-----BEGIN PRIVATE KEY-----".into(),
    }];
    assert_eq!(scan_lines(&cut), vec![]);
}

#[test]
fn github_tokens_are_found() {
    for prefix in ["ghp", "gho", "ghu", "ghs", "ghr"] {
        assert_found(
            &format!("token = \"{}\"", github_token(prefix)),
            SecretKind::GitHubToken,
        );
    }
    let fine_grained = format!(
        "GITHUB_TOKEN={}",
        ["github_pat", &random(ALNUM, 22, 2), &random(ALNUM, 59, 3)].join("_")
    );
    assert_found(&fine_grained, SecretKind::GitHubToken);
}

#[test]
fn github_token_lookalikes_are_not_secrets() {
    assert_clean("let prefix = \"ghp_\";");
    assert_clean(&format!("ghp_{}", "X".repeat(36)));
    assert_clean(&format!("ghs_{}", random(ALNUM, 20, 4)));
    assert_clean(r#"let re = Regex::new(r"gh[pousr]_[A-Za-z0-9]{36}");"#);
    assert_clean("github_pat_ tokens are fine-grained");
}

#[test]
fn aws_keys_are_found() {
    let id = format!("AKIA{}", random(UPPER_DIGITS, 16, 5));
    assert_found(
        &format!("aws_access_key_id = {id}"),
        SecretKind::AwsAccessKeyId,
    );
    let session = format!("ASIA{}", random(UPPER_DIGITS, 16, 6));
    assert_found(&format!("\"{session}\""), SecretKind::AwsAccessKeyId);
    let secret = format!("{}7", random(BASE64, 39, 7));
    assert_found(
        &format!("aws_secret_access_key = {secret}"),
        SecretKind::AwsSecretAccessKey,
    );
    assert_found(
        &format!("  AWS_SECRET_ACCESS_KEY: \"{secret}\""),
        SecretKind::AwsSecretAccessKey,
    );
    assert_found(
        &format!("awsSecretKey = '{secret}';"),
        SecretKind::AwsSecretAccessKey,
    );
}

#[test]
fn aws_lookalikes_are_not_secrets() {
    // AWS's documented examples.
    assert_clean(&["AKIA", "IOSFODNN7", "EXAMPLE"].concat());
    assert_clean(&format!(
        "aws_secret_access_key = {}",
        ["wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "EXAMPLEKEY"].concat()
    ));
    assert_clean(&format!("AKIA{}", "X".repeat(16)));
    assert_clean(r#"aws_secret_access_key = os.environ["AWS_SECRET_ACCESS_KEY"]"#);
    assert_clean("secret = base64::encode(sha1(&data)) // 40 chars of hex");
    // 40 base64 characters without the variable name are not enough.
    assert_clean(&format!("checksum = \"{}\"", random(BASE64, 40, 8)));
}

#[test]
fn slack_tokens_are_found() {
    for kind in ['b', 'p', 'a', 'r', 's'] {
        let token = format!(
            "xox{kind}-{}-{}-{}",
            random("0123456789", 12, 9),
            random("0123456789", 13, 10),
            random(ALNUM, 24, 11)
        );
        assert_found(&format!("SLACK_TOKEN={token}"), SecretKind::SlackToken);
    }
    assert_clean("Slack bot tokens start with xoxb-.");
    assert_clean("xoxb-your-token-here");
}

#[test]
fn stripe_live_keys_are_found() {
    let key = ["sk", "live", &random(ALNUM, 24, 12)].join("_");
    assert_found(
        &format!("stripe.api_key = \"{key}\""),
        SecretKind::StripeLiveKey,
    );
    let restricted = ["rk", "live", &random(ALNUM, 24, 13)].join("_");
    assert_found(&restricted, SecretKind::StripeLiveKey);
    assert_clean(&["sk", "test", &random(ALNUM, 24, 14)].join("_"));
    assert_clean("if key.starts_with(\"sk_live_\") {");
}

#[test]
fn openai_keys_are_found() {
    assert_found(
        &format!("OPENAI_API_KEY=sk-{}", random(ALNUM, 48, 15)),
        SecretKind::OpenAiKey,
    );
    assert_found(
        &format!("key: sk-proj-{}", random(URL_SAFE, 120, 16)),
        SecretKind::OpenAiKey,
    );
}

#[test]
fn openai_lookalikes_are_not_secrets() {
    assert_clean(r#"let key = "sk";"#);
    assert_clean("pip install scikit-learn sk-video");
    assert_clean(r#"<div class="sk-spinner-pulse-animation-container-wide-variant">"#);
    assert_clean(&format!("sk-{}", "a".repeat(48)));
    assert_clean(r#"let re = Regex::new(r"sk-[A-Za-z0-9]{48}");"#);
}

#[test]
fn anthropic_keys_are_found_as_anthropic() {
    let key = format!("sk-ant-api03-{}AA", random(URL_SAFE, 93, 17));
    assert_found(
        &format!("ANTHROPIC_API_KEY={key}"),
        SecretKind::AnthropicKey,
    );
    assert_clean("export ANTHROPIC_API_KEY=sk-ant-...");
}

#[test]
fn google_api_keys_are_found() {
    let key = format!("AIza{}", random(URL_SAFE, 35, 18));
    assert_found(&format!("apiKey: \"{key}\","), SecretKind::GoogleApiKey);
    assert_found(&key, SecretKind::GoogleApiKey);
    assert_clean("const prefix = 'AIza';");
    assert_clean(&format!("AIza{}", random(URL_SAFE, 20, 19)));
}

#[test]
fn jwts_are_found() {
    let jwt = format!(
        "eyJ{}.eyJ{}.{}",
        random(URL_SAFE, 30, 20),
        random(URL_SAFE, 60, 21),
        random(URL_SAFE, 43, 22)
    );
    assert_found(&format!("Authorization: Bearer {jwt}"), SecretKind::Jwt);
    // jwt.io's sample token is in half the tutorials on the web.
    let sample = [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
    .join(".");
    assert_clean(&sample);
    assert_clean("a JWT header starts with eyJhbGciOi");
    assert_clean("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
}

#[test]
fn ordinary_code_is_clean() {
    for line in [
        r#"let key = "sk";"#,
        r#"static SECRET_RE: &str = r"(?i)secret\s*=\s*\S+";"#,
        "password = get_password_from_vault()",
        r#"password: "changeme""#,
        "fn private_key(&self) -> &PrivateKey { &self.key }",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "https://example.com/path?token=abc",
        "integrity sha512-Q2ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZg==",
    ] {
        assert_clean(line);
    }
}

#[test]
fn findings_name_file_line_and_kind_only() {
    let token = github_token("ghs");
    let changes = ChangeSet::new(vec![FileChange {
        path: "src/config.rs".into(),
        old_path: None,
        status: ChangeStatus::Modified,
        additions: 2,
        deletions: 0,
        binary: false,
        added_lines: vec![
            AddedLine {
                number: 11,
                text: "// the token".into(),
            },
            AddedLine {
                number: 12,
                text: format!("const TOKEN: &str = \"{token}\";"),
            },
        ],
    }]);
    let findings = scan(&changes);
    assert_eq!(
        findings,
        vec![Finding {
            path: "src/config.rs".into(),
            line: 12,
            kind: SecretKind::GitHubToken
        }]
    );
    let shown = findings[0].to_string();
    assert_eq!(shown, "src/config.rs:12 adds a GitHub token");
    assert!(!shown.contains(&token));
}

#[test]
fn redact_hides_every_secret_and_keeps_the_rest() {
    let token = github_token("ghp");
    let key = format!("AKIA{}", random(UPPER_DIGITS, 16, 23));
    let text = format!("using {token} and {key}\nall good\n");
    assert_eq!(
        redact(&text),
        "using [redacted: a GitHub token] and [redacted: an AWS access key id]\nall good\n"
    );
    let pem = pem("PRIVATE KEY").join("\n") + "\nafter\n";
    let redacted = redact(&pem);
    assert!(
        redacted.starts_with("[redacted: a private key]"),
        "{redacted}"
    );
    assert!(redacted.ends_with("after\n"));
    assert!(!redacted.contains(&random(BASE64, 64, 7)));
    assert_eq!(redact("nothing to see\n"), "nothing to see\n");
}
