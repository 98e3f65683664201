//! Properties of the agent's diff applier (`diff::apply`), which takes a model's untrusted
//! unified diff: a diff that describes a change makes exactly that change, a diff that
//! does not apply changes nothing, and no path in a diff reaches outside the workspace or
//! into `.git`. The fuzz target `diff_apply` (docs/fuzzing.md) explores the same function
//! without bounds.
//!
//! Each property runs `PROPTEST_CASES` cases (64 unless set: every case builds a workspace
//! on disk); a failure prints its minimal input and seed and is kept in
//! `proptest-regressions/properties.txt`, which is committed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use countersign_agent::diff::{ChangeKind, DiffError, FileChange, apply};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A workspace `ws/` inside a temporary directory that also holds `outside/secret.txt`,
/// which `ws/link` points to.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(files: &[(&str, &str)]) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("ws");
        fs::create_dir_all(root.join(".git")).expect("mkdir");
        fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
        fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        fs::write(dir.path().join("outside/secret.txt"), "keep\n").expect("write");
        std::os::unix::fs::symlink("../outside", root.join("link")).expect("symlink");
        for (path, text) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        World { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }

    /// Every file and directory under the temporary directory (symlinks not followed).
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let base = self.dir.path();
        let mut out = BTreeMap::new();
        let mut stack = vec![base.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).expect("read dir") {
                let path = entry.expect("dir entry").path();
                let meta = fs::symlink_metadata(&path).expect("metadata");
                let name = path
                    .strip_prefix(base)
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

    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.root().join(path)).ok()
    }
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

/// The entries of `after` that differ from `before`.
fn changed(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// Lines of source text. Lines starting with `--`/`++` are left out: in a diff they read
/// as a file header, which no unified-diff reader can tell apart.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z ]{0,12}",
        2 => prop::sample::select(vec![
            "fn main() {", "}", "", "    x += 1;", "\t", "@@ not a hunk", "\\ not a marker",
            "- a list", "+ plus", "diff --git", "é😀", " leading", "trailing ",
        ]).prop_map(str::to_owned),
        1 => "\\PC{0,10}".prop_filter("no header-like lines", |l| {
            !l.starts_with("--") && !l.starts_with("++") && !l.contains('\r')
        }),
    ]
}

fn text() -> impl Strategy<Value = String> {
    (prop::collection::vec(line(), 0..12), any::<bool>()).prop_map(|(lines, final_newline)| {
        let mut text = lines.join("\n");
        if final_newline && !text.is_empty() {
            text.push('\n');
        }
        text
    })
}

/// `original` and an edit of it: lines kept, dropped, changed and inserted.
fn edit() -> impl Strategy<Value = (String, String)> {
    (
        prop::collection::vec(line(), 1..16),
        prop::collection::vec((0u8..4, line()), 1..16),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, ops, nl_before, nl_after)| {
            let mut edited = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                let (op, new) = &ops[i % ops.len()];
                match op {
                    0 => {}
                    1 => edited.push(new.clone()),
                    2 => {
                        edited.push(l.clone());
                        edited.push(new.clone());
                    }
                    _ => edited.push(l.clone()),
                }
            }
            let join = |lines: &[String], nl: bool| {
                let mut t = lines.join("\n");
                if nl {
                    t.push('\n');
                }
                t
            };
            (join(&lines, nl_before), join(&edited, nl_after))
        })
}

/// A unified diff of `path` from `old` to `new`, as a model (or git) writes it.
fn unified(path: &str, old: &str, new: &str) -> String {
    let patch = diffy::create_patch(old, new).to_string();
    let hunks = patch.split_once("\n+++ ").map_or("", |(_, rest)| {
        rest.split_once('\n').map_or("", |(_, hunks)| hunks)
    });
    format!("diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n{hunks}")
}

/// Paths a diff may name: fine ones, and ones that must be refused.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,6}(/[a-z]{1,6}){0,2}\\.txt",
        2 => prop::sample::select(vec![
            "../outside/secret.txt", "../../etc/passwd", "/etc/passwd", "link/secret.txt",
            "link/new.txt", ".git/HEAD", ".git/hooks/pre-commit", "src/../.git/config",
            "a/../../outside/x", "./src/a.rs", "src//a.rs", "src/a.rs", "old.txt", "",
            "\"src/a.rs\"", "a\0b", "link", ".", "..",
        ]).prop_map(str::to_owned),
    ]
}

/// A diff section adding or editing `path`, with a hunk that may or may not match.
fn section() -> impl Strategy<Value = String> {
    (
        path(),
        prop::sample::select(vec!["create", "edit", "delete", "edit-bad"]),
        text(),
    )
        .prop_map(|(path, kind, body)| match kind {
            "create" => {
                let added: String = body.lines().map(|l| format!("+{l}\n")).collect();
                let added = if added.is_empty() {
                    "+x\n".to_owned()
                } else {
                    added
                };
                format!("--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n{added}")
            }
            "edit" => format!("--- a/{path}\n+++ b/{path}\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n"),
            "delete" => format!("--- a/{path}\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n-now\n"),
            _ => format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{body}nope\n+x\n"),
        })
}

const FILES: &[(&str, &str)] = &[
    ("src/a.rs", "fn a() {\n    1\n}\n"),
    ("src/b.rs", "one\ntwo\nthree\nfour\nfive\n"),
    ("old.txt", "bye\nnow\n"),
];

/// Checks what any diff may do: only workspace files outside `.git` change, a refused
/// diff changes nothing, and the reported changes are the ones made.
fn check_effects(
    world: &World,
    before: &BTreeMap<String, Vec<u8>>,
    result: &Result<Vec<FileChange>, DiffError>,
) -> Result<(), TestCaseError> {
    let after = world.snapshot();
    let changed = changed(before, &after);
    for path in &changed {
        prop_assert!(
            path.starts_with("ws/") && !path.starts_with("ws/.git") && !path.starts_with("ws/link"),
            "{} changed outside the workspace: {:?}",
            path,
            result
        );
    }
    match result {
        Err(_) => prop_assert!(changed.is_empty(), "a refused diff changed {:?}", changed),
        Ok(changes) => {
            for change in changes {
                let key = format!("ws/{}", normalised(&change.path));
                let (was, is) = (before.get(&key), after.get(&key));
                let consistent = match change.kind {
                    ChangeKind::Created => was.is_none() && is.is_some(),
                    ChangeKind::Deleted => was.is_some() && is.is_none(),
                    ChangeKind::Modified => was.is_some() && is.is_some(),
                };
                prop_assert!(consistent, "{} but {:?} → {:?}", change, was, is);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// The diff of an edit, applied to the original, gives the edited text, and only that
    /// file is reported (as modified).
    #[test]
    fn a_diff_makes_exactly_its_change((old, new) in edit()) {
        prop_assume!(old != new);
        let world = World::new(&[("src/file.txt", &old)]);
        let diff = unified("src/file.txt", &old, &new);
        let changes = apply(&world.root(), &diff);
        let Ok(changes) = changes else {
            return Err(TestCaseError::fail(format!("{changes:?}\n{diff}")));
        };
        prop_assert_eq!(world.read("src/file.txt"), Some(new), "{}", diff);
        prop_assert_eq!(changes, vec![FileChange { path: "src/file.txt".into(), kind: ChangeKind::Modified }]);
    }

    /// Diffs that name files outside the workspace, in `.git`, through the symlink, or
    /// whose hunks do not match, change nothing anywhere; those that apply change only
    /// workspace files, as reported.
    #[test]
    fn diffs_stay_inside_and_apply_all_or_nothing(sections in prop::collection::vec(section(), 1..4)) {
        let world = World::new(FILES);
        let before = world.snapshot();
        let diff = sections.concat();
        let result = apply(&world.root(), &diff);
        check_effects(&world, &before, &result)?;
    }

    /// Arbitrary text, and damaged real diffs, are refused or applied, never a panic, with
    /// the same guarantees.
    #[test]
    fn arbitrary_diffs_never_panic(
        text in prop_oneof![
            "(\\PC|\n){0,200}",
            "((---|\\+\\+\\+|@@|[ +-]|diff --git)[ a-z/.0-9@,+-]{0,20}\n){0,12}",
        ],
        flips in prop::collection::vec((any::<prop::sample::Index>(), "[ +@\n/a-z.-]"), 0..4),
        base in any::<bool>(),
    ) {
        let mut diff = if base { unified("src/b.rs", FILES[1].1, "one\nTWO\nthree\nfour\n") } else { text };
        for (at, replacement) in flips {
            let chars: Vec<char> = diff.chars().collect();
            if chars.is_empty() {
                break;
            }
            let i = at.index(chars.len());
            diff = chars[..i].iter().collect::<String>() + &replacement + &chars[i + 1..].iter().collect::<String>();
        }
        let world = World::new(FILES);
        let before = world.snapshot();
        let result = apply(&world.root(), &diff);
        check_effects(&world, &before, &result)?;
    }
}

#[test]
fn the_symlink_out_of_the_workspace_is_refused() {
    let world = World::new(FILES);
    let before = world.snapshot();
    let result = apply(
        &world.root(),
        "--- a/link/secret.txt\n+++ b/link/secret.txt\n@@ -1 +1 @@\n-keep\n+gone\n",
    );
    assert!(matches!(result, Err(DiffError::Path { .. })), "{result:?}");
    assert_eq!(world.snapshot(), before);
    assert!(Path::new(&world.dir.path().join("outside/secret.txt")).exists());
}
