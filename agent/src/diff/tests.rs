use super::*;

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(dir.path().join("src")).expect("mkdir");
    fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
    fs::write(dir.path().join("src/a.rs"), "fn a() {\n    1\n}\n").expect("write");
    fs::write(dir.path().join("src/b.rs"), "one\ntwo\nthree\nfour\nfive\n").expect("write");
    fs::write(dir.path().join("old.txt"), "bye\nnow\n").expect("write");
    dir
}

fn read(dir: &tempfile::TempDir, path: &str) -> String {
    fs::read_to_string(dir.path().join(path)).expect("read")
}

fn change(path: &str, kind: ChangeKind) -> FileChange {
    FileChange {
        path: path.into(),
        kind,
    }
}

const MULTI: &str = "\
diff --git a/src/a.rs b/src/a.rs
index 1111111..2222222 100644
--- a/src/a.rs
+++ b/src/a.rs
@@ -1,3 +1,3 @@
 fn a() {
-    1
+    2
 }
diff --git a/src/b.rs b/src/b.rs
--- a/src/b.rs
+++ b/src/b.rs
@@ -1,2 +1,2 @@ header context
-one
+ONE
 two
@@ -4,2 +4,3 @@
 four
 five
+six
diff --git a/src/c.rs b/src/c.rs
new file mode 100644
--- /dev/null
+++ b/src/c.rs
@@ -0,0 +1,2 @@
+fn c() {}
+// new
diff --git a/old.txt b/old.txt
deleted file mode 100644
--- a/old.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-bye
-now
";

#[test]
fn applies_a_multi_file_diff_with_new_and_deleted_files() {
    let dir = workspace();
    let changes = apply(dir.path(), MULTI).expect("applies");
    assert_eq!(
        changes,
        vec![
            change("src/a.rs", ChangeKind::Modified),
            change("src/b.rs", ChangeKind::Modified),
            change("src/c.rs", ChangeKind::Created),
            change("old.txt", ChangeKind::Deleted),
        ]
    );
    assert_eq!(read(&dir, "src/a.rs"), "fn a() {\n    2\n}\n");
    assert_eq!(read(&dir, "src/b.rs"), "ONE\ntwo\nthree\nfour\nfive\nsix\n");
    assert_eq!(read(&dir, "src/c.rs"), "fn c() {}\n// new\n");
    assert!(!dir.path().join("old.txt").exists());
}

#[test]
fn a_failing_hunk_leaves_every_file_untouched() {
    let dir = workspace();
    let diff = "\
--- a/src/a.rs
+++ b/src/a.rs
@@ -1,3 +1,3 @@
 fn a() {
-    1
+    2
 }
--- /dev/null
+++ b/src/new.rs
@@ -0,0 +1 @@
+new
--- a/src/b.rs
+++ b/src/b.rs
@@ -1,1 +1,1 @@
-one
+ONE
@@ -3,1 +3,1 @@
-not in the file
+3
";
    let error = apply(dir.path(), diff).expect_err("second hunk fails");
    assert!(
        matches!(&error, DiffError::Hunk { path, hunk: 2 } if path == "src/b.rs"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("src/b.rs: hunk #2 does not apply"),
        "{error}"
    );
    assert_eq!(read(&dir, "src/a.rs"), "fn a() {\n    1\n}\n");
    assert_eq!(read(&dir, "src/b.rs"), "one\ntwo\nthree\nfour\nfive\n");
    assert!(!dir.path().join("src/new.rs").exists());
}

#[test]
fn recounts_hunk_headers_models_get_wrong() {
    let dir = workspace();
    // Wrong counts, a wrong start line, and no numbers at all.
    let diff = "\
--- a/src/b.rs
+++ b/src/b.rs
@@ -2,9 +2,1 @@
 three
-four
+FOUR
@@ @@
 five
+six

";
    apply(dir.path(), diff).expect("applies");
    assert_eq!(read(&dir, "src/b.rs"), "one\ntwo\nthree\nFOUR\nfive\nsix\n");
}

#[test]
fn paths_are_confined() {
    let dir = workspace();
    let cases = [
        (
            "--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n",
            "../x: path escapes the workspace",
        ),
        (
            "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+x\n",
            ".git/hooks/pre-commit: paths inside .git/",
        ),
        (
            "--- /dev/null\n+++ /etc/cron.d/x\n@@ -0,0 +1 @@\n+x\n",
            "/etc/cron.d/x: absolute paths",
        ),
    ];
    for (diff, expected) in cases {
        let error = apply(dir.path(), diff).expect_err("refused").to_string();
        assert!(error.starts_with(expected), "{error}");
    }
}

#[test]
fn reports_inconsistent_files() {
    let dir = workspace();
    let cases = [
        (
            "--- /dev/null\n+++ b/src/a.rs\n@@ -0,0 +1 @@\n+x\n",
            "src/a.rs: already exists",
        ),
        (
            "--- a/missing.rs\n+++ b/missing.rs\n@@ -1 +1 @@\n-a\n+b\n",
            "missing.rs: no such file",
        ),
        (
            "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n",
            "old.txt: the diff deletes the file but does not remove",
        ),
        (
            "--- a/src/a.rs\n+++ b/src/z.rs\n@@ -1 +1 @@\n-fn a() {\n+fn z() {\n",
            "src/z.rs: renames",
        ),
        ("just prose\n", "cannot parse the diff: no `--- a/path`"),
        (
            "@@ -1 +1 @@\n-a\n+b\n",
            "cannot parse the diff: hunk header at line 1",
        ),
        (
            "--- a/src/a.rs\n+++ b/src/a.rs\n",
            "cannot parse the diff: src/a.rs: no hunks",
        ),
        (
            "diff --git a/img.png b/img.png\nindex 1..2 100644\nBinary files a/img.png and b/img.png differ\n",
            "cannot parse the diff: binary patches",
        ),
        (
            "--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1 @@\n fn a() {\nprose\n",
            "cannot parse the diff: src/a.rs:",
        ),
    ];
    for (diff, expected) in cases {
        let error = apply(dir.path(), diff).expect_err("refused").to_string();
        assert!(error.starts_with(expected), "{diff}\n→ {error}");
    }
    assert_eq!(read(&dir, "old.txt"), "bye\nnow\n");
}

#[test]
fn a_file_named_twice_is_patched_in_order() {
    let dir = workspace();
    let diff = "\
--- /dev/null
+++ b/notes.md
@@ -0,0 +1 @@
+first
--- a/notes.md
+++ b/notes.md
@@ -1 +1,2 @@
 first
+second
";
    let changes = apply(dir.path(), diff).expect("applies");
    assert_eq!(changes, vec![change("notes.md", ChangeKind::Created)]);
    assert_eq!(read(&dir, "notes.md"), "first\nsecond\n");
}

#[test]
fn handles_missing_newline_at_end_of_file() {
    let dir = workspace();
    fs::write(dir.path().join("n.txt"), "a\nb").expect("write");
    let diff = "--- a/n.txt\n+++ b/n.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n";
    apply(dir.path(), diff).expect("applies");
    assert_eq!(read(&dir, "n.txt"), "a\nc");
}

#[test]
fn file_names_drop_prefixes_and_timestamps() {
    assert_eq!(
        file_name("--- a/src/x.rs\n", "--- ", "a/"),
        Some("src/x.rs".into())
    );
    assert_eq!(
        file_name("+++ b/src/x.rs\t2024-01-01 00:00\n", "+++ ", "b/"),
        Some("src/x.rs".into())
    );
    assert_eq!(
        file_name("+++ src/x.rs\n", "+++ ", "b/"),
        Some("src/x.rs".into())
    );
    assert_eq!(file_name("--- /dev/null\n", "--- ", "a/"), None);
    assert_eq!(
        file_name("--- \"a/sp ace.rs\"\n", "--- ", "a/"),
        Some("sp ace.rs".into())
    );
}
