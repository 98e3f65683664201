//! `AgentResult::parse` on untrusted termination messages, and `to_message` on what it
//! accepts. Never panics or hangs; an accepted result re-rendered fits the termination
//! message, parses, and keeps its outcome and pointers.
#![no_main]

use countersign_crds::result::{AgentResult, MAX_RESULT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(result) = AgentResult::parse(text) else {
        return;
    };
    let message = result.to_message();
    let Ok(again) = AgentResult::parse(&message) else {
        // Only pointers (provider, branch, commit) too large for any message may do this.
        let pointers = serde_json::to_string(&AgentResult {
            summary: None,
            reason: None,
            report: None,
            verification: None,
            ..result.clone()
        })
        .expect("serialises");
        assert!(pointers.len() > MAX_RESULT_BYTES, "{message}");
        return;
    };
    assert_eq!(again.outcome, result.outcome);
    assert_eq!(again.provider, result.provider);
    assert_eq!(again.branch, result.branch);
    assert_eq!(again.commit, result.commit);
    assert_eq!(again.usage, result.usage);
});
