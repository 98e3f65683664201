//! Matches a changed path against every distinct path glob of a policy at once.
//!
//! globset's combined set falls back to one big regex set for globs like `**/auth/**` or
//! `libs/x/src/**/*.{rs,go}`; with a few hundred of those it costs microseconds per path,
//! which is tens of milliseconds on a 10,000-file change. Nearly every glob has a literal
//! that any matching path must contain (`auth`, `libs/x/src`), so one Aho-Corasick pass over
//! the path finds the few globs worth testing, and only those run their own matcher. Globs
//! without a usable literal (`**`, `*`) stay in a small globset checked for every path.

use aho_corasick::{AhoCorasick, MatchKind};
use globset::{Candidate, Glob, GlobMatcher, GlobSet, GlobSetBuilder};

/// Literals shorter than this match too many paths to be worth a prefilter.
const MIN_LITERAL: usize = 2;

/// Every distinct path glob, with the prefilter that finds candidates for a path.
#[derive(Debug, Clone)]
pub(crate) struct PathIndex {
    matchers: Vec<Matcher>,
    literals: Option<AhoCorasick>,
    /// Literal id → glob ids that require it.
    by_literal: Vec<Vec<u32>>,
    fallback: GlobSet,
    /// Fallback set position → glob id.
    fallback_ids: Vec<u32>,
    /// Globs that match every path (`**`), tested for free.
    always: Vec<u32>,
}

/// Reusable buffers for matching many paths against one index.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    stamp: Vec<u32>,
    epoch: u32,
    fallback: Vec<usize>,
}

impl PathIndex {
    /// Builds the index; `globs[i]` is glob id `i` as written and parsed.
    pub fn build(globs: &[(String, Glob)]) -> Result<Self, globset::Error> {
        let mut literals: Vec<String> = Vec::new();
        let mut by_literal: Vec<Vec<u32>> = Vec::new();
        let mut fallback = GlobSetBuilder::new();
        let mut fallback_ids = Vec::new();
        let mut always = Vec::new();
        for (id, (text, glob)) in globs.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            if text == "**" {
                always.push(id);
                continue;
            }
            match required_literal(text) {
                Some(lit) => match literals.iter().position(|l| *l == lit) {
                    Some(at) => by_literal[at].push(id),
                    None => {
                        literals.push(lit);
                        by_literal.push(vec![id]);
                    }
                },
                None => {
                    fallback.add(glob.clone());
                    fallback_ids.push(id);
                }
            }
        }
        let literals = if literals.is_empty() {
            None
        } else {
            // Only fails on absurd sizes; treat that like an unusable prefilter.
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&literals)
                .ok()
        };
        let mut index = Self {
            matchers: globs
                .iter()
                .map(|(text, g)| Matcher::new(text, g))
                .collect(),
            literals,
            by_literal,
            fallback: fallback.build()?,
            fallback_ids,
            always,
        };
        if index.literals.is_none() && !index.by_literal.is_empty() {
            // Prefilter unavailable: put every glob in the fallback set.
            let mut all = GlobSetBuilder::new();
            for (_, g) in globs {
                all.add(g.clone());
            }
            index.fallback = all.build()?;
            index.fallback_ids = (0..globs.len())
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect();
            index.by_literal.clear();
            index.always.clear();
        }
        Ok(index)
    }

    /// Calls `hit` once for every glob id matching `path`, in no particular order.
    pub fn for_each_match(
        &self,
        path: &str,
        candidate: &Candidate<'_>,
        scratch: &mut Scratch,
        mut hit: impl FnMut(usize),
    ) {
        if scratch.stamp.len() != self.matchers.len() {
            scratch.stamp = vec![0; self.matchers.len()];
            scratch.epoch = 0;
        }
        scratch.epoch = scratch.epoch.wrapping_add(1);
        if scratch.epoch == 0 {
            scratch.stamp.fill(0);
            scratch.epoch = 1;
        }
        for &id in &self.always {
            hit(id as usize);
        }
        if let Some(ac) = &self.literals {
            for m in ac.find_overlapping_iter(path) {
                for &id in &self.by_literal[m.pattern().as_usize()] {
                    let slot = &mut scratch.stamp[id as usize];
                    if *slot == scratch.epoch {
                        continue;
                    }
                    *slot = scratch.epoch;
                    if self.matchers[id as usize].is_match(path, candidate) {
                        hit(id as usize);
                    }
                }
            }
        }
        if !self.fallback.is_empty() {
            self.fallback
                .matches_candidate_into(candidate, &mut scratch.fallback);
            for &i in &scratch.fallback {
                hit(self.fallback_ids[i] as usize);
            }
        }
    }
}

/// How one glob is checked once the prefilter picked it. The common shapes are plain string
/// tests equivalent to globset's regex (tested against globset below); the rest use globset.
#[derive(Debug, Clone)]
enum Matcher {
    /// `CODEOWNERS`: the path itself.
    Exact(String),
    /// `dir/**` (stored with the slash): below the directory.
    Under(String),
    /// `**/*.ext` (stored as `.ext`): any file ending so; the suffix has no `/`.
    EndsWith(String),
    /// `**/name` (stored as `/name`): the file or directory `name` anywhere.
    Named(String),
    /// `**/dir/**` (stored as `dir/`): below a directory of that name anywhere.
    UnderAny(String),
    /// Anything else.
    Glob(GlobMatcher),
}

fn is_plain(s: &str) -> bool {
    !s.is_empty() && !s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

impl Matcher {
    fn new(text: &str, glob: &Glob) -> Self {
        if is_plain(text) {
            return Self::Exact(text.to_owned());
        }
        if let Some(dir) = text.strip_suffix("/**") {
            if let Some(inner) = dir.strip_prefix("**/") {
                if is_plain(inner) {
                    return Self::UnderAny(format!("{inner}/"));
                }
            } else if is_plain(dir) {
                return Self::Under(format!("{dir}/"));
            }
        }
        if let Some(name) = text.strip_prefix("**/") {
            if let Some(ext) = name.strip_prefix('*')
                && is_plain(ext)
                && !ext.contains('/')
            {
                return Self::EndsWith(ext.to_owned());
            }
            if is_plain(name) {
                return Self::Named(format!("/{name}"));
            }
        }
        Self::Glob(glob.compile_matcher())
    }

    fn is_match(&self, path: &str, candidate: &Candidate<'_>) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Under(dir) => path.starts_with(dir.as_str()),
            Self::EndsWith(ext) => path.ends_with(ext.as_str()),
            Self::Named(slash_name) => {
                path == &slash_name[1..] || path.ends_with(slash_name.as_str())
            }
            Self::UnderAny(dir) => {
                path.starts_with(dir.as_str())
                    || path
                        .match_indices(dir.as_str())
                        .any(|(i, _)| i > 0 && path.as_bytes()[i - 1] == b'/')
            }
            Self::Glob(m) => m.is_match_candidate(candidate),
        }
    }
}

/// The longest run of literal text every path matching `glob` must contain, if it is long
/// enough to be a useful filter. Wildcards, classes and alternations end a run; a `/` next
/// to `**` belongs to the wildcard (`**/x` matches `x`), so it is not part of the literal.
pub(crate) fn required_literal(glob: &str) -> Option<String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    let mut i = 0;
    let end_run = |run: &mut String, runs: &mut Vec<String>| {
        if !run.is_empty() {
            runs.push(std::mem::take(run));
        }
    };
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    if run.ends_with('/') {
                        run.pop();
                    }
                    i += 2;
                    while chars.get(i) == Some(&'*') {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
                end_run(&mut run, &mut runs);
            }
            '?' => {
                end_run(&mut run, &mut runs);
                i += 1;
            }
            '\\' => {
                end_run(&mut run, &mut runs);
                i += 2;
            }
            '[' => {
                end_run(&mut run, &mut runs);
                i += 1;
                if matches!(chars.get(i), Some('!' | '^')) {
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                end_run(&mut run, &mut runs);
                let mut depth = 0usize;
                while i < chars.len() {
                    match chars[i] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        '\\' => i += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            c => {
                run.push(c);
                i += 1;
            }
        }
    }
    end_run(&mut run, &mut runs);
    runs.into_iter()
        .filter(|r| r.len() >= MIN_LITERAL && r != "/")
        .max_by_key(String::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_required_substrings() {
        for (glob, lit) in [
            ("**/auth/**", Some("auth")),
            ("services/svc-1/**", Some("services/svc-1")),
            ("**/component_1/*.rs", Some("component_1/")),
            ("libs/lib-2/src/**/*.{rs,go}", Some("libs/lib-2/src")),
            ("**/*.md", Some(".md")),
            ("LICENSE*", Some("LICENSE")),
            ("CODEOWNERS", Some("CODEOWNERS")),
            ("**", None),
            ("*", None),
            ("*.[ch]", None),
            ("a/**/b", None),
            ("release/[0-9]*", Some("release/")),
            ("x\\*yz/**", Some("yz")),
            ("{a,b}/long-name/**", Some("/long-name")),
        ] {
            assert_eq!(required_literal(glob).as_deref(), lit, "{glob}");
        }
    }

    fn index(globs: &[&str]) -> PathIndex {
        let parsed: Vec<(String, Glob)> = globs
            .iter()
            .map(|g| {
                (
                    (*g).to_owned(),
                    crate::compile::parse_glob(g).expect("valid"),
                )
            })
            .collect();
        PathIndex::build(&parsed).expect("builds")
    }

    #[test]
    fn the_index_agrees_with_globset() {
        let globs = [
            "**/auth/**",
            "auth/**",
            "**/*.md",
            "docs/**",
            "**",
            "src/*.rs",
            "**/migrations/**",
            "LICENSE*",
            "a/**/b",
            "services/svc-1/**",
            "*.{yml,yaml}",
            "**",
            "CODEOWNERS",
            "**/x.txt",
            "**/*.sql",
            "**/secret/**",
            "src/**",
        ];
        let idx = index(&globs);
        let mut scratch = Scratch::default();
        for path in [
            "auth/x.rs",
            "src/auth/x.rs",
            "README.md",
            "docs/a/b.md",
            "src/main.rs",
            "src/a/main.rs",
            "db/migrations/1.sql",
            "migrations/1.sql",
            "LICENSE-MIT",
            "a/b",
            "a/x/y/b",
            "services/svc-10/x",
            "services/svc-1/x",
            "ci.yml",
            "x/ci.yml",
            "CODEOWNERS",
            "a/CODEOWNERS",
            "x.txt",
            "a/x.txt",
            "ax.txt",
            "/x.txt",
            "q.sql",
            "a/.sql",
            "secret/a",
            "a/secret/b",
            "asecret/b",
            "secret",
            "src",
            "src/",
            "src/a",
            "srcx/a",
        ] {
            let mut got = Vec::new();
            idx.for_each_match(path, &Candidate::new(path), &mut scratch, |g| got.push(g));
            got.sort_unstable();
            let want: Vec<usize> = globs
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    crate::compile::parse_glob(g)
                        .expect("valid")
                        .compile_matcher()
                        .is_match(path)
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, want, "{path}");
        }
    }
}
