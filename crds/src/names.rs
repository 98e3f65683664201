//! Deterministic object names and label values that always fit Kubernetes' limits.
//!
//! Names derived from GitHub (a Project name plus an issue number plus an Agent name) can get
//! long; these helpers cut them and add a stable hash of the whole, so the same inputs always
//! give the same name (redelivered webhooks stay idempotent) and different inputs stay apart.

/// Longest name used for objects Countersign derives (a DNS-1123 label, so the name also fits
/// in label values and in names of the Pods and Secrets derived from it).
pub const MAX_DERIVED_NAME: usize = 63;

/// `base` followed by `suffix`, shortened with an 8-hex-digit hash of `base` when the two do
/// not fit in [`MAX_DERIVED_NAME`] characters. `base` must be ASCII (Kubernetes names are).
pub fn with_suffix(base: &str, suffix: &str) -> String {
    if base.len() + suffix.len() <= MAX_DERIVED_NAME {
        return format!("{base}{suffix}");
    }
    let hash = fnv1a(base.as_bytes());
    let keep = MAX_DERIVED_NAME.saturating_sub(suffix.len() + 9);
    let mut cut = keep.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}-{hash:08x}{suffix}",
        base[..cut].trim_end_matches(['-', '.'])
    )
}

/// The name of the ApprovalGate of pull request `number` in `project`: `<project>-pr-<n>`
/// (the bot creates it, the controller finds it after opening an agent's pull request).
pub fn gate_name(project: &str, number: u64) -> String {
    with_suffix(&format!("{project}-pr-{number}"), "")
}

/// A label value for `text`: itself when it has at most 63 characters, otherwise a hash.
pub fn label_value(text: &str) -> String {
    if text.len() <= MAX_DERIVED_NAME {
        text.to_owned()
    } else {
        format!("h-{:08x}", fnv1a(text.as_bytes()))
    }
}

/// 32-bit FNV-1a: small, stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_hashed_stably() {
        assert_eq!(with_suffix("run", "-1"), "run-1");
        let long = "a".repeat(70);
        let name = with_suffix(&long, "-2");
        assert!(name.len() <= MAX_DERIVED_NAME, "{name}");
        assert!(name.ends_with("-2"));
        assert_eq!(name, with_suffix(&long, "-2"), "deterministic");
        assert_ne!(
            name,
            with_suffix(&"b".repeat(70), "-2"),
            "inputs stay apart"
        );
        assert!(label_value(&long).len() <= MAX_DERIVED_NAME);
        assert_eq!(label_value("42"), "42");
    }
}
