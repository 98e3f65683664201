//! The fingerprint of a pull request's change (its diff from the merge base), to tell a
//! clean rebase from a different change: like `git patch-id`, it hashes each file's diff
//! without hunk line numbers, so the same change applied to a newer base has the same
//! fingerprint, while a push that changes any file's diff — including one that keeps the
//! head's tree but moves it onto a newer base, which then shows up as reverting what the base
//! gained — has another.

use ring::digest::{Context, SHA256};

use crate::pulls::PullFile;

/// Prefix of fingerprints computed by this version of the algorithm.
const VERSION: &str = "p1-";

/// The fingerprint of a change made of `files`; `None` when a file carries neither a diff
/// nor a blob SHA (nothing to compare it by). Order-independent.
pub fn change_id(files: &[PullFile]) -> Option<String> {
    let mut sorted: Vec<&PullFile> = files.iter().collect();
    sorted.sort_by(|a, b| (&a.path, &a.previous_path).cmp(&(&b.path, &b.previous_path)));
    let mut ctx = Context::new(&SHA256);
    for f in sorted {
        field(&mut ctx, f.status.as_bytes());
        field(
            &mut ctx,
            f.previous_path.as_deref().unwrap_or("").as_bytes(),
        );
        field(&mut ctx, f.path.as_bytes());
        match (&f.patch, &f.sha) {
            (Some(patch), _) => {
                ctx.update(b"patch\0");
                for line in patch.lines() {
                    // Hunk headers carry line numbers that move with the base; the lines of
                    // the hunk are the change.
                    let line = if line.starts_with("@@") { "@@" } else { line };
                    field(&mut ctx, line.trim_end_matches('\r').as_bytes());
                }
            }
            (None, Some(sha)) => {
                ctx.update(b"blob\0");
                field(&mut ctx, sha.as_bytes());
            }
            (None, None) => return None,
        }
        ctx.update(b"\x1e");
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{VERSION}{hex}"))
}

/// A digest of a review body (SHA-256, 32 hex digits), to tell later whether it is still
/// the body that was received.
pub fn body_digest(body: &str) -> String {
    let digest = ring::digest::digest(&SHA256, body.replace("\r\n", "\n").as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A length-prefixed field, so no two different inputs hash alike.
fn field(ctx: &mut Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, patch: Option<&str>, sha: Option<&str>) -> PullFile {
        PullFile {
            path: path.into(),
            previous_path: None,
            additions: 1,
            deletions: 0,
            status: "modified".into(),
            sha: sha.map(str::to_owned),
            patch: patch.map(str::to_owned),
        }
    }

    #[test]
    fn line_numbers_do_not_matter_the_lines_do() {
        let a = change_id(&[file(
            "a.rs",
            Some("@@ -1,3 +1,4 @@ fn x\n ctx\n+added\n ctx"),
            None,
        )]);
        let moved = change_id(&[file(
            "a.rs",
            Some("@@ -40,3 +41,4 @@ fn y\n ctx\n+added\n ctx"),
            None,
        )]);
        let other = change_id(&[file(
            "a.rs",
            Some("@@ -1,3 +1,4 @@ fn x\n ctx\n+changed\n ctx"),
            None,
        )]);
        assert_eq!(a, moved);
        assert_ne!(a, other);
        assert!(
            a.as_deref()
                .is_some_and(|id| id.starts_with("p1-") && id.len() == 67)
        );
    }

    #[test]
    fn an_extra_file_or_a_revert_is_another_change_and_order_does_not_matter() {
        let one = file("a.rs", Some("@@ -1 +1 @@\n-x\n+y"), None);
        let revert = file("fix.rs", Some("@@ -1 +1 @@\n-fixed\n+buggy"), None);
        let two = change_id(&[one.clone(), revert.clone()]);
        assert_ne!(change_id(std::slice::from_ref(&one)), two);
        assert_eq!(change_id(&[revert, one]), two);
    }

    #[test]
    fn files_without_a_diff_are_compared_by_blob_and_nothing_means_unknown() {
        let bin = change_id(&[file("logo.png", None, Some("abc"))]);
        assert_ne!(bin, change_id(&[file("logo.png", None, Some("abd"))]));
        assert_eq!(change_id(&[file("x", None, None)]), None);
        let mut renamed = file("new.rs", None, Some("abc"));
        renamed.previous_path = Some("old.rs".into());
        renamed.status = "renamed".into();
        assert_ne!(change_id(&[renamed]), bin);
    }
}
