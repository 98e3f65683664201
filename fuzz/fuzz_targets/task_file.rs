//! The task file the agent reads (`serde_json` into `TaskFile`, as `read_task` does) from
//! untrusted bytes. Never panics; a task file that parses serialises and parses back to the
//! same value.
#![no_main]

use countersign_crds::task_file::TaskFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(task) = serde_json::from_slice::<TaskFile>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&task).expect("a task file serialises");
    let again: TaskFile = serde_json::from_slice(&bytes).expect("a serialised task file parses");
    assert_eq!(again, task);
});
