//! The issue-text sanitiser (`visible_markdown`, `visible_title`) on untrusted text. Never
//! panics; the output keeps its cap, holds no invisible or control character, and
//! sanitising it again changes nothing.
#![no_main]

use countersign_policies::visible::{
    MAX_TITLE_BYTES, is_invisible, visible_markdown, visible_title,
};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 16 * 1024;

fn hidden(c: char) -> bool {
    is_invisible(c) || (c.is_control() && c != '\n' && c != '\t')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let body = visible_markdown(text, MAX_BODY);
    assert!(body.text.len() <= MAX_BODY);
    assert!(!body.text.chars().any(hidden), "{:?}", body.text);
    if !body.truncated {
        let again = visible_markdown(&body.text, MAX_BODY);
        assert_eq!(again.text, body.text, "sanitising twice changed the text");
    }
    let small = visible_markdown(text, 64);
    assert!(small.text.len() <= 64);
    let title = visible_title(text);
    assert!(!title.is_empty() && title.len() <= MAX_TITLE_BYTES);
    assert!(
        !title.contains(['\n', '\r', '\t']) && !title.chars().any(hidden),
        "{title:?}"
    );
    assert_eq!(visible_title(&title), title, "a title is stable");
});
