//! `parse_comment` and `new_commands` on untrusted comment Markdown. Never panics, keeps the
//! byte caps on instructions and reasons, reports only lines that start with `/`, and an
//! unchanged edit yields no new command.
#![no_main]

use countersign_policies::commands::{
    Command, MAX_INSTRUCTIONS_BYTES, MAX_REASON_BYTES, Parsed, new_commands, parse_comment,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_comment(text);
    assert!(parsed.len() <= text.matches('/').count());
    for p in &parsed {
        match p {
            Parsed::Command(Command::Run { instructions, .. }) => {
                assert!(
                    instructions
                        .as_ref()
                        .is_none_or(|i| !i.is_empty() && i.len() <= MAX_INSTRUCTIONS_BYTES)
                );
            }
            Parsed::Command(Command::Reject { reason }) => {
                assert!(
                    reason
                        .as_ref()
                        .is_none_or(|r| !r.is_empty() && r.len() <= MAX_REASON_BYTES)
                );
            }
            Parsed::Invalid { text, .. } => assert!(text.starts_with('/'), "{text:?}"),
            Parsed::Command(_) => {}
        }
    }
    assert!(new_commands(Some(text), text).is_empty());
    assert_eq!(new_commands(Some(""), text), parsed);
    assert!(new_commands(None, text).is_empty());
});
