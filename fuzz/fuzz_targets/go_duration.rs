//! `GoDuration::from_str` (Go's `time.ParseDuration`, unsigned) on untrusted text: CRD
//! fields, flags and policy files. Never panics or hangs; an accepted duration prints in a
//! form that parses back to the same value.
#![no_main]

use countersign_crds::GoDuration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = text.parse::<GoDuration>() {
        let shown = d.to_string();
        assert_eq!(shown.parse::<GoDuration>(), Ok(d), "{text:?} → {shown}");
    }
});
