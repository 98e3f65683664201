//! The agent's diff applier (`countersign_agent::diff::apply`) on untrusted model diffs,
//! against a small workspace with a symlink pointing out of it. Never panics, never
//! touches anything outside the workspace or under `.git`, changes nothing when it refuses,
//! and reports exactly the files it changed.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use countersign_agent::diff::{ChangeKind, apply};
use libfuzzer_sys::fuzz_target;

/// Every file under `dir` (symlinks not followed) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let name = path
                .strip_prefix(dir)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("link");
                out.insert(name, target.to_string_lossy().as_bytes().to_vec());
            } else {
                out.insert(name, fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// `path` as the file system resolves it lexically (`./a//b/../c` is `a/c`).
fn normalised(path: &str) -> String {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fuzz_target!(|data: &[u8]| {
    let Ok(diff) = std::str::from_utf8(data) else {
        return;
    };
    let outer = tempfile::tempdir().expect("temp dir");
    let root = outer.path().join("ws");
    fs::create_dir_all(root.join("src")).expect("mkdir");
    fs::create_dir_all(root.join(".git")).expect("mkdir");
    fs::create_dir_all(outer.path().join("outside")).expect("mkdir");
    fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
    fs::write(root.join("src/a.rs"), "fn a() {\n    1\n}\n").expect("write");
    fs::write(root.join("src/b.rs"), "one\ntwo\nthree\nfour\nfive\n").expect("write");
    fs::write(root.join("old.txt"), "bye\nnow\n").expect("write");
    fs::write(outer.path().join("outside/secret.txt"), "keep\n").expect("write");
    std::os::unix::fs::symlink("../outside", root.join("link")).expect("symlink");
    let before = snapshot(outer.path());
    let result = apply(&root, diff);
    let after = snapshot(outer.path());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    for path in &changed {
        assert!(
            path.starts_with("ws/") && !path.starts_with("ws/.git") && !path.starts_with("ws/link"),
            "{path} changed outside the workspace: {result:?}"
        );
    }
    match result {
        Err(_) => assert!(changed.is_empty(), "a refused diff changed {changed:?}"),
        Ok(changes) => {
            for change in &changes {
                let key = format!("ws/{}", normalised(&change.path));
                let (was, is) = (before.get(&key), after.get(&key));
                match change.kind {
                    ChangeKind::Created => assert!(was.is_none() && is.is_some(), "{change}"),
                    ChangeKind::Deleted => assert!(was.is_some() && is.is_none(), "{change}"),
                    ChangeKind::Modified => assert!(was.is_some() && is.is_some(), "{change}"),
                }
            }
        }
    }
});
