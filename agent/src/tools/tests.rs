use super::*;

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    fs::create_dir_all(root.join("src/nested")).expect("mkdir");
    fs::create_dir_all(root.join(".git")).expect("mkdir .git");
    fs::write(root.join(".git/config"), "[core]\n").expect("write");
    fs::write(root.join("README.md"), "# Demo\nhello world\n").expect("write");
    fs::write(
        root.join("src/lib.rs"),
        "pub fn answer() -> u32 {\n    42\n}\n",
    )
    .expect("write");
    fs::write(root.join("src/nested/deep.rs"), "// TODO: answer\n").expect("write");
    fs::write(root.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0").expect("write");
    dir
}

fn toolbox(dir: &tempfile::TempDir, access: Access) -> Toolbox {
    Toolbox::new(dir.path(), access, false)
}

fn output(outcome: ToolOutcome) -> String {
    match outcome {
        ToolOutcome::Output(text) => text,
        other => panic!("expected output, got {other:?}"),
    }
}

fn error(outcome: ToolOutcome) -> String {
    match outcome {
        ToolOutcome::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn confine_refuses_escapes_absolute_paths_and_git() {
    let dir = workspace();
    let root = dir.path();
    assert_eq!(confine(root, "../x"), Err(PathError::Escapes));
    assert_eq!(confine(root, "src/../../x"), Err(PathError::Escapes));
    assert_eq!(confine(root, "/etc/passwd"), Err(PathError::Absolute));
    assert_eq!(confine(root, ".git/config"), Err(PathError::GitDir));
    assert_eq!(confine(root, "src/../.git/config"), Err(PathError::GitDir));
    assert_eq!(confine(root, ".git"), Err(PathError::GitDir));
    assert!(matches!(confine(root, "a\0b"), Err(PathError::Invalid(_))));
    let canonical = root.canonicalize().expect("root");
    assert_eq!(
        confine(root, "src/../README.md"),
        Ok(canonical.join("README.md"))
    );
    assert_eq!(
        confine(root, "new/dir/file.rs"),
        Ok(canonical.join("new/dir/file.rs"))
    );
    assert_eq!(confine(root, ""), Ok(canonical.clone()));
    assert_eq!(confine(root, "./"), Ok(canonical));
}

#[cfg(unix)]
#[test]
fn confine_refuses_symlinks_that_leave_the_workspace() {
    let dir = workspace();
    let outside = tempfile::tempdir().expect("temp dir");
    fs::write(outside.path().join("secret"), "s3cret").expect("write");
    let root = dir.path();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("secret.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(root.join(".git"), root.join("gitdir")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("missing"), root.join("dangling"))
        .expect("symlink");
    std::os::unix::fs::symlink(root.join("src"), root.join("code")).expect("symlink");

    assert_eq!(confine(root, "out/secret"), Err(PathError::Escapes));
    assert_eq!(confine(root, "out/new-file"), Err(PathError::Escapes));
    assert_eq!(confine(root, "secret.txt"), Err(PathError::Escapes));
    assert_eq!(confine(root, "gitdir/config"), Err(PathError::GitDir));
    assert!(matches!(
        confine(root, "dangling"),
        Err(PathError::Invalid(_))
    ));
    let canonical = root.canonicalize().expect("root");
    assert_eq!(
        confine(root, "code/lib.rs"),
        Ok(canonical.join("src/lib.rs"))
    );

    let tools = toolbox(&dir, Access::ReadWrite);
    let refused = error(tools.call("read_file", &json!({"path": "secret.txt"})));
    assert_eq!(refused, "error: path escapes the workspace");
    let refused = error(tools.call("write_file", &json!({"path": "dangling", "content": "x"})));
    assert!(refused.contains("dangling symlink"), "{refused}");
    assert!(!outside.path().join("missing").exists());
    // Search skips symlinks, so it never reads the outside file.
    let found = output(tools.call("search", &json!({"pattern": "s3cret"})));
    assert_eq!(found, "(no matches)");
}

#[test]
fn tool_errors_are_returned_not_panics() {
    let dir = workspace();
    let tools = toolbox(&dir, Access::ReadWrite);
    let cases = [
        (
            "read_file",
            json!({"path": "../x"}),
            "error: path escapes the workspace",
        ),
        (
            "read_file",
            json!({"path": "/etc/passwd"}),
            "error: absolute paths are not allowed",
        ),
        (
            "read_file",
            json!({"path": ".git/config"}),
            "error: paths inside .git/ are not accessible",
        ),
        (
            "write_file",
            json!({"path": ".git/hooks/pre-commit", "content": "x"}),
            "error: paths inside .git/",
        ),
        (
            "read_file",
            json!({}),
            "error: missing required string argument `path`",
        ),
        (
            "read_file",
            json!({"path": 7}),
            "error: argument `path` must be a string",
        ),
        (
            "read_file",
            json!({"path": "nope.rs"}),
            "error: nope.rs: no such file",
        ),
        (
            "read_file",
            json!({"path": "logo.png"}),
            "error: logo.png: binary file",
        ),
        (
            "read_file",
            json!({"path": "src"}),
            "error: src: is a directory",
        ),
        (
            "list_files",
            json!({"path": "README.md"}),
            "error: README.md is not a directory",
        ),
        (
            "search",
            json!({"pattern": "("}),
            "error: invalid regular expression",
        ),
        (
            "write_file",
            json!({"path": "src", "content": "x"}),
            "error: src is a directory",
        ),
        (
            "apply_diff",
            json!({"diff": "nonsense"}),
            "error: cannot parse the diff",
        ),
        (
            "launch_rockets",
            json!({}),
            "error: unknown tool \"launch_rockets\"",
        ),
        (
            "finish",
            json!({"summary": "  "}),
            "error: `summary` must not be empty",
        ),
    ];
    for (tool, args, expected) in cases {
        let text = error(tools.call(tool, &args));
        assert!(text.starts_with(expected), "{tool} {args}: {text}");
    }
}

#[test]
fn list_files_is_recursive_sorted_capped_and_skips_git() {
    let dir = workspace();
    let tools = toolbox(&dir, Access::ReadOnly);
    let listing = output(tools.call("list_files", &json!({})));
    assert_eq!(
        listing,
        "README.md\nlogo.png\nsrc/lib.rs\nsrc/nested/deep.rs"
    );
    let listing = output(tools.call("list_files", &json!({"path": "src"})));
    assert_eq!(listing, "src/lib.rs\nsrc/nested/deep.rs");
    let listing = output(tools.call("list_files", &json!({"max": "2"})));
    assert_eq!(
        listing,
        "README.md\nlogo.png\n… truncated: showing 2 of 4 files; pass a narrower `path`"
    );
}

#[test]
fn read_file_numbers_lines_and_reads_ranges() {
    let dir = workspace();
    let text: String = (1..=3000).map(|n| format!("line {n}\n")).collect();
    fs::write(dir.path().join("big.txt"), text).expect("write");
    let tools = toolbox(&dir, Access::ReadOnly);

    let whole = output(tools.call("read_file", &json!({"path": "src/lib.rs"})));
    assert_eq!(
        whole,
        "     1\tpub fn answer() -> u32 {\n     2\t    42\n     3\t}\n"
    );

    let range = output(tools.call(
        "read_file",
        &json!({"path": "big.txt", "start_line": 10, "end_line": 12}),
    ));
    assert_eq!(
        range,
        "    10\tline 10\n    11\tline 11\n    12\tline 12\n(lines 10-12 of 3000); call again with start_line=13"
    );

    let capped = output(tools.call("read_file", &json!({"path": "big.txt"})));
    assert_eq!(capped.lines().count(), MAX_READ_LINES + 1);
    assert!(
        capped.ends_with("(lines 1-2000 of 3000); call again with start_line=2001"),
        "{capped}"
    );

    let tail = output(tools.call("read_file", &json!({"path": "big.txt", "start_line": 2999})));
    assert_eq!(
        tail,
        "  2999\tline 2999\n  3000\tline 3000\n(lines 2999-3000 of 3000)"
    );

    let past = error(tools.call("read_file", &json!({"path": "src/lib.rs", "start_line": 9})));
    assert_eq!(past, "error: src/lib.rs has only 3 lines");
    let backwards = error(tools.call(
        "read_file",
        &json!({"path": "src/lib.rs", "start_line": 3, "end_line": 2}),
    ));
    assert!(backwards.contains("end_line ≥ start_line"), "{backwards}");
}

#[test]
fn read_file_caps_bytes_per_call() {
    let dir = workspace();
    let line = "x".repeat(999);
    let text: String = (0..500).map(|_| format!("{line}\n")).collect();
    fs::write(dir.path().join("wide.txt"), text).expect("write");
    let tools = toolbox(&dir, Access::ReadOnly);
    let out = output(tools.call("read_file", &json!({"path": "wide.txt"})));
    // Numbered lines are 1007 bytes: 101 fit in 100 KB.
    assert!(out.len() <= MAX_READ_BYTES + 64, "{}", out.len());
    assert!(
        out.ends_with("(lines 1-101 of 500); call again with start_line=102"),
        "{}",
        &out[out.len() - 80..]
    );
}

#[test]
fn search_reports_file_line_text_and_skips_binary_and_git() {
    let dir = workspace();
    fs::write(dir.path().join(".git/HEAD"), "answer\n").expect("write");
    fs::write(dir.path().join("blob.bin"), b"answer\0answer").expect("write");
    let tools = toolbox(&dir, Access::ReadOnly);
    let hits = output(tools.call("search", &json!({"pattern": "answer"})));
    assert_eq!(
        hits,
        "src/lib.rs:1:pub fn answer() -> u32 {\nsrc/nested/deep.rs:1:// TODO: answer"
    );
    let hits = output(tools.call(
        "search",
        &json!({"pattern": "^\\s+\\d+$", "path": "src/lib.rs"}),
    ));
    assert_eq!(hits, "src/lib.rs:2:    42");
    let capped = output(tools.call("search", &json!({"pattern": "answer", "max_results": 1})));
    assert_eq!(
        capped,
        "src/lib.rs:1:pub fn answer() -> u32 {\n… truncated at 1 results; narrow the pattern or `path`"
    );
    let none = output(tools.call("search", &json!({"pattern": "zebra"})));
    assert_eq!(none, "(no matches)");
}

#[test]
fn write_file_creates_parent_directories() {
    let dir = workspace();
    let tools = toolbox(&dir, Access::ReadWrite);
    let out = output(tools.call(
        "write_file",
        &json!({"path": "docs/new/guide.md", "content": "# Guide\n"}),
    ));
    assert_eq!(out, "wrote 8 bytes to docs/new/guide.md");
    assert_eq!(
        fs::read_to_string(dir.path().join("docs/new/guide.md")).expect("read"),
        "# Guide\n"
    );
}

#[test]
fn apply_diff_tool_reports_the_changed_files() {
    let dir = workspace();
    let tools = toolbox(&dir, Access::ReadWrite);
    let diff = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn answer() -> u32 {\n-    42\n+    43\n }\n";
    let out = output(tools.call("apply_diff", &json!({"diff": diff})));
    assert_eq!(out, "applied:\nmodified src/lib.rs");
    assert!(
        fs::read_to_string(dir.path().join("src/lib.rs"))
            .expect("read")
            .contains("43")
    );
}

#[test]
fn read_only_toolbox_refuses_writes_and_hides_them() {
    let dir = workspace();
    let tools = toolbox(&dir, Access::ReadOnly);
    let names: Vec<&str> = tools.specs().iter().map(|s| s.name).collect();
    assert_eq!(names, ["list_files", "read_file", "search", "finish"]);
    let refused = error(tools.call("write_file", &json!({"path": "x.txt", "content": "x"})));
    assert!(refused.contains("read-only"), "{refused}");
    assert!(!dir.path().join("x.txt").exists());
    let refused = error(tools.call(
        "apply_diff",
        &json!({"diff": "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+x\n"}),
    ));
    assert!(refused.contains("read-only"), "{refused}");
}

#[test]
fn specs_are_json_schema_objects() {
    let specs = specs(Access::ReadWrite);
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "list_files",
            "read_file",
            "search",
            "write_file",
            "apply_diff",
            "finish"
        ]
    );
    for spec in &specs {
        assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
        let properties = spec.parameters["properties"]
            .as_object()
            .expect("properties");
        for required in spec.parameters["required"].as_array().expect("required") {
            assert!(
                properties.contains_key(required.as_str().expect("name")),
                "{}",
                spec.name
            );
        }
    }
}

#[test]
fn finish_returns_summary_and_report() {
    let dir = workspace();
    let tools = Toolbox::new(dir.path(), Access::ReadOnly, true);
    let missing = error(tools.call("finish", &json!({"summary": "planned"})));
    assert!(missing.contains("`report`"), "{missing}");
    let done = tools.call(
        "finish",
        &json!({"summary": " planned ", "report": "# Plan\n"}),
    );
    assert_eq!(
        done,
        ToolOutcome::Finished(Finish {
            summary: "planned".into(),
            report: Some("# Plan".into()),
            question: None,
        })
    );
}

#[test]
fn output_is_capped_with_a_marker() {
    let capped = cap_output("é".repeat(MAX_OUTPUT_BYTES));
    assert!(capped.len() < MAX_OUTPUT_BYTES + 40);
    assert!(capped.ends_with("… [output truncated at 30 KB]"));
    assert_eq!(cap_output("short".into()), "short");
}
