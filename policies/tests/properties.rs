//! Properties of the policies crate's untrusted-input entry points: the comment command
//! grammar, the issue-text sanitiser (`visible`) and RiskPolicy compile and evaluate. The
//! fuzz targets `commands`, `sanitiser` and `policy` (docs/fuzzing.md) explore the same
//! functions without bounds.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set); a failure prints its minimal
//! input and seed and is kept in `proptest-regressions/properties.txt`, which is committed.

use countersign_crds::RiskPolicySpec;
use countersign_policies::commands::{
    AgentName, Command, MAX_INSTRUCTIONS_BYTES, MAX_REASON_BYTES, Parsed, new_commands,
    parse_comment,
};
use countersign_policies::visible::{
    MAX_TITLE_BYTES, UNTITLED, is_invisible, visible_markdown, visible_title,
};
use countersign_policies::{AuthorKind, Change, ChangedFile, CompiledPolicy, MAX_SCORE};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

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

// ---------------------------------------------------------------------------------------
// Comment commands

/// How a command is written: namespaced or not, and which letters are upper case.
#[derive(Debug, Clone)]
struct Spelling {
    namespaced: bool,
    upper: Vec<bool>,
    /// Words after a command that takes no arguments (ignored by the parser).
    trailing: Option<String>,
}

fn words(max_words: usize) -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9,?']{1,10}", 1..=max_words).prop_map(|w| w.join(" "))
}

fn agent_name() -> impl Strategy<Value = AgentName> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
        .prop_map(|n| AgentName::parse(&n).expect("the strategy makes DNS-1123 labels"))
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            agent_name(),
            proptest::option::of(prop::collection::vec(words(8), 1..4)),
            any::<bool>()
        )
            .prop_map(|(agent, lines, breakdown)| Command::Run {
                agent,
                instructions: lines.map(|l| l.join("\n")),
                breakdown,
            }),
        Just(Command::Approve),
        proptest::option::of(words(12)).prop_map(|reason| Command::Reject { reason }),
        Just(Command::Hold),
        Just(Command::Unhold),
        Just(Command::Retry),
        Just(Command::Cancel),
        Just(Command::Risk),
        Just(Command::Help),
    ]
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 24),
        proptest::option::of(words(3)),
    )
        .prop_map(|(namespaced, upper, trailing)| Spelling {
            namespaced,
            upper,
            trailing,
        })
}

fn cased(word: &str, upper: &[bool]) -> String {
    word.chars()
        .zip(upper.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// The comment line(s) a person writes for `command`.
fn render(command: &Command, spelling: &Spelling) -> String {
    let word = cased(command.name(), &spelling.upper);
    // `run` and `plan` exist only namespaced.
    let namespaced = spelling.namespaced || matches!(command, Command::Run { .. });
    let mut line = if namespaced {
        format!("/{} {word}", cased("countersign", &spelling.upper[7..]))
    } else {
        format!("/{word}")
    };
    match command {
        Command::Run {
            agent,
            instructions,
            ..
        } => {
            line.push(' ');
            line.push_str(agent.as_str());
            if let Some(text) = instructions {
                line.push(' ');
                line.push_str(text);
            }
        }
        Command::Reject { reason } => {
            if let Some(reason) = reason {
                line.push(' ');
                line.push_str(reason);
            }
        }
        _ => {
            if let Some(extra) = &spelling.trailing {
                line.push(' ');
                line.push_str(extra);
            }
        }
    }
    line
}

/// A comment with `commands`, one per line, in paragraphs of one or more commands.
fn comment(commands: &[(Command, Spelling)], breaks: &[bool]) -> String {
    let mut out = String::new();
    for (i, (command, spelling)) in commands.iter().enumerate() {
        if i > 0 {
            out.push_str(if breaks[i % breaks.len()] {
                "\n\n"
            } else {
                "\n"
            });
        }
        out.push_str(&render(command, spelling));
    }
    out
}

fn commands(max: usize) -> impl Strategy<Value = (Vec<(Command, Spelling)>, Vec<bool>)> {
    (
        prop::collection::vec((command(), spelling()), 0..max),
        prop::collection::vec(any::<bool>(), 1..8),
    )
}

fn as_parsed(commands: &[(Command, Spelling)]) -> Vec<Parsed> {
    commands
        .iter()
        .map(|(c, _)| Parsed::Command(c.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Sanitiser

/// The marker hidden content carries; it must never reach the output.
const SECRET: &str = "Zq7secret";

/// Visible Markdown of one line or block.
const VISIBLE: &[&str] = &[
    "Please fix the login bug.",
    "**bold** and _emphasis_",
    "- a list item",
    "1. first",
    "> a quote",
    "# Heading",
    "[a link](https://example.com/x)",
    "`inline code`",
    "<b>bold tag</b>",
    "café, 日本語, emoji 😀",
    "&amp; &lt;not a tag&gt;",
];

/// Blocks of visible Markdown.
const VISIBLE_BLOCKS: &[&str] = &[
    "see [the docs][docs]\n\n[docs]: https://example.com/docs",
    "[one][1], [two][2], [three][3]\n\n[3]: https://example.com/3\n[1]: https://example.com/1\n[2]: <https://example.com/2>",
    "| a | b |\n|---|---|\n| c | d |",
    "- [ ] task\n- [x] done",
    "```\ncode <b>kept</b>\n```",
];

/// Inline Markdown that hides [`SECRET`] from a reader.
const HIDDEN_INLINE: &[&str] = &[
    "<!-- Zq7secret -->",
    "<span hidden>Zq7secret</span>",
    "<div style=\"display: none\">Zq7secret</div>",
    "<p style=\"visibility:hidden\">Zq7secret</p>",
    "<script>Zq7secret</script>",
    "<style>Zq7secret</style>",
    "<template>Zq7secret</template>",
    "![Zq7secret](https://example.com/i.png)",
    "[link](https://example.com \"Zq7secret\")",
];

/// Blocks that hide [`SECRET`] from a reader.
const HIDDEN_BLOCKS: &[&str] = &[
    "<!--\nZq7secret\n-->",
    "<script>\nZq7secret\n</script>",
    "<div hidden>\nZq7secret\n</div>",
    "[//]: # (Zq7secret)",
    "[unused]: https://example.com \"Zq7secret\"",
];

/// Invisible characters, as characters and as entities.
const INVISIBLE: &[&str] = &[
    "\u{200B}",
    "\u{200D}",
    "\u{202E}",
    "\u{2066}",
    "\u{FEFF}",
    "\u{00AD}",
    "\u{E0041}",
    "\u{FE0F}",
    "\u{3164}",
    "\u{0007}",
    "&#8203;",
    "&#x200B;",
    "&zwj;",
    "&#xE0041;",
];

fn pick(list: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(list).prop_map(str::to_owned).boxed()
}

/// Any of the above, and with `noise` short runs of Markdown syntax characters, joined by
/// spaces, line breaks or nothing: markup that may combine with its neighbours.
fn markdown(noise: bool) -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        3 => pick(VISIBLE),
        1 => pick(VISIBLE_BLOCKS),
        3 => pick(HIDDEN_INLINE),
        1 => pick(HIDDEN_BLOCKS),
        2 => pick(INVISIBLE),
    ];
    let fragment = if noise {
        prop_oneof![8 => fragment, 1 => "[a-z <>/!\\[\\]()*_`#-]{1,12}"].boxed()
    } else {
        fragment.boxed()
    };
    (
        prop::collection::vec(fragment, 0..12),
        prop::collection::vec(prop::sample::select(vec![" ", "\n", "\n\n", ""]), 1..6),
    )
        .prop_map(|(fragments, seps)| {
            let mut out = String::new();
            for (i, f) in fragments.iter().enumerate() {
                if i > 0 {
                    out.push_str(seps[i % seps.len()]);
                }
                out.push_str(f);
            }
            out
        })
}

/// Markdown in which every [`SECRET`] is hidden from a reader: blocks separated by blank
/// lines, each a hiding block or a visible line followed by inline pieces. (A line that
/// starts with HTML is a raw HTML block, whose Markdown GitHub shows as written, so inline
/// pieces never start one.)
fn hiding_markdown() -> impl Strategy<Value = String> {
    let inline = prop_oneof![2 => pick(VISIBLE), 3 => pick(HIDDEN_INLINE), 2 => pick(INVISIBLE)];
    let line = (pick(VISIBLE), prop::collection::vec(inline, 0..5)).prop_map(|(start, rest)| {
        std::iter::once(start)
            .chain(rest)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let block = prop_oneof![3 => line, 1 => pick(HIDDEN_BLOCKS), 1 => pick(VISIBLE_BLOCKS)];
    prop::collection::vec(block, 0..6).prop_map(|blocks| blocks.join("\n\n"))
}

/// Characters a reader does not see (tabs and newlines aside).
fn hidden_char(c: char) -> bool {
    is_invisible(c) || (c.is_control() && c != '\n' && c != '\t')
}

// ---------------------------------------------------------------------------------------
// RiskPolicy

fn glob() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec![
        "src", "docs", "deploy", "Deploy", "a", "*", "**", "*.md", "*.rs", "{a,b}", "[ab]", "?",
        "\\*", "x?y", "prod*", "[", "{", "[!a]", "**.md", "***",
    ]);
    prop::collection::vec(part, 1..4).prop_map(|p| p.join("/"))
}

fn path() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec![
        "src",
        "docs",
        "deploy",
        "a",
        "b",
        "README.md",
        "main.rs",
        "x.MD",
        "prod",
        "Src",
        "y",
        "*",
        "[",
        "{a,b}",
    ]);
    prop::collection::vec(part, 1..5).prop_map(|p| p.join("/"))
}

fn score() -> impl Strategy<Value = Option<u8>> {
    // Mostly valid scores, sometimes out of range (a compile error, not a panic).
    proptest::option::of(prop_oneof![10 => 0u8..=10, 1 => 11u8..=255])
}

fn rule(i: usize) -> impl Strategy<Value = Value> {
    (
        (
            prop::collection::vec(glob(), 0..3),
            prop::collection::vec(glob(), 0..2),
            prop::collection::vec(glob(), 0..2),
            prop::collection::vec("[a-zA-Z:-]{1,10}", 0..2),
        ),
        (
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..2000),
            prop::collection::vec(prop::sample::select(vec!["human", "bot", "ai"]), 0..2),
            prop::collection::vec(
                prop::sample::select(vec!["main", "release/*", "[", "**"]),
                0..2,
            ),
            proptest::option::of(any::<bool>()),
            any::<bool>(),
        ),
        (score(), score(), score()),
        prop::sample::select(vec!["", "dup"]),
    )
        .prop_map(
            move |(
                (paths, except, only, labels),
                (files, lines, authors, branches, gitops, case),
                (impact, complexity, business),
                dup,
            )| {
                let mut m = json!({
                    "paths": paths,
                    "exceptPaths": except,
                    "onlyPaths": only,
                    "labels": labels,
                    "authorKinds": authors,
                    "baseBranches": branches,
                    "caseSensitive": case,
                });
                if let Some(f) = files {
                    m["minFiles"] = json!(f);
                }
                if let Some(l) = lines {
                    m["minLines"] = json!(l);
                }
                if let Some(g) = gitops {
                    m["gitopsPaths"] = json!(g);
                }
                let mut set = json!({});
                for (key, s) in [
                    ("impact", impact),
                    ("complexity", complexity),
                    ("businessImpact", business),
                ] {
                    if let Some(s) = s {
                        set[key] = json!(s);
                    }
                }
                // Sometimes a duplicate name (a compile error).
                let name = if dup.is_empty() {
                    format!("rule-{i}")
                } else {
                    "dup".to_owned()
                };
                json!({"name": name, "match": m, "set": set})
            },
        )
}

fn workflow() -> impl Strategy<Value = Value> {
    let role = prop::sample::select(vec![
        "developer",
        "tech_lead",
        "manager",
        "security_team",
        "cto",
    ]);
    (
        prop::collection::vec((role.clone(), 0u32..12), 0..3),
        any::<bool>(),
        proptest::option::of(prop::sample::select(vec!["4h", "30m", "0s", "1.5h"])),
        prop::sample::select(vec!["remind", "escalate", "expire"]),
        proptest::option::of(role),
    )
        .prop_map(|(approvers, auto, timeout, on_timeout, escalate_to)| {
            let approvers: Vec<Value> = approvers
                .into_iter()
                .map(|(role, count)| json!({"role": role, "count": count}))
                .collect();
            let mut w = json!({
                "name": "wf",
                "approvers": approvers,
                "autoApprove": auto,
                "onTimeout": on_timeout,
            });
            if let Some(t) = timeout {
                w["timeout"] = json!(t);
            }
            if let Some(e) = escalate_to {
                w["escalateTo"] = json!(e);
            }
            w
        })
}

const REGO: &str = r#"package countersign.risk

billing := [f.path | some f in input.files; startswith(f.path, "billing/")]

factors["businessImpact"] := 9 if count(billing) > 0

reasons contains sprintf("%s touches billing", [billing[0]]) if count(billing) > 0

factors["complexity"] := 7 if input.authorKind == "ai"
"#;

/// A RiskPolicy spec as JSON: mostly valid, sometimes with bad globs, scores, thresholds,
/// weights or workflows, so that both compile outcomes are exercised.
fn policy_spec() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(0usize..1, 0..6).prop_flat_map(|slots| {
            (0..slots.len()).map(rule).collect::<Vec<_>>()
        }),
        prop_oneof![
            3 => Just(json!({"method": "max"})),
            1 => (0u8..=100, 0u8..=100).prop_map(|(a, b)| {
                let a = a.min(100);
                let b = b.min(100 - a);
                json!({"method": "weighted", "weights": {"impact": a, "complexity": b, "businessImpact": 100 - a - b}})
            }),
            1 => Just(json!({"method": "weighted", "weights": {"impact": 90, "complexity": 90, "businessImpact": 90}})),
        ],
        prop_oneof![
            4 => Just(json!({"medium": 5, "high": 8, "critical": 9})),
            2 => (1u8..=8).prop_flat_map(|m| (Just(m), (m + 1)..=9)).prop_flat_map(|(m, h)| {
                (Just(m), Just(h), (h + 1)..=10)
            }).prop_map(|(m, h, c)| json!({"medium": m, "high": h, "critical": c})),
            1 => (0u8..=12, 0u8..=12, 0u8..=12).prop_map(|(m, h, c)| json!({"medium": m, "high": h, "critical": c})),
        ],
        [workflow(), workflow(), workflow(), workflow()],
        prop::collection::vec(glob(), 0..3),
        prop_oneof![6 => Just(None), 1 => Just(Some(REGO))],
    )
        .prop_map(|(rules, combine, thresholds, [low, medium, high, critical], never, rego)| {
            let mut spec = json!({
                "rules": rules,
                "combine": combine,
                "thresholds": thresholds,
                "workflows": {"low": low, "medium": medium, "high": high, "critical": critical},
                "neverAutoApprovePaths": never,
            });
            if let Some(module) = rego {
                spec["rego"] = json!({"module": module});
            }
            spec
        })
}

fn change() -> impl Strategy<Value = Change> {
    (
        prop::collection::vec((path(), 0u32..500, 0u32..500), 0..8),
        prop::collection::vec("[a-zA-Z:-]{1,10}", 0..3),
        prop::sample::select(vec![AuthorKind::Human, AuthorKind::Bot, AuthorKind::Ai]),
        proptest::option::of(prop::sample::select(vec!["main", "release/1", "dev"])),
        prop::collection::vec(glob(), 0..2),
        prop_oneof![9 => Just(None), 1 => Just(Some("GitHub listed 3000 of 3500 files"))],
    )
        .prop_map(
            |(files, labels, author_kind, base, gitops, incomplete)| Change {
                files: files
                    .into_iter()
                    .map(|(p, a, d)| ChangedFile::new(p, a, d))
                    .collect(),
                labels,
                author_kind,
                base_branch: base.map(str::to_owned),
                gitops_paths: gitops,
                incomplete: incomplete.map(str::to_owned),
            },
        )
}

/// The spec as the CRD types read it; `None` when serde refuses it (a schema error the
/// apiserver would reject first).
fn read_spec(spec: &Value) -> Option<RiskPolicySpec> {
    serde_json::from_value(spec.clone()).ok()
}

proptest! {
    #![proptest_config(config(256))]

    /// Commands written the ways people write them parse back to the same commands, in
    /// order, whatever their case, namespace or paragraphs. The parser returns all of them:
    /// the per-comment cap (`MAX_COMMANDS_PER_COMMENT`) is applied by its callers.
    #[test]
    fn rendered_commands_parse_back((cmds, breaks) in commands(16)) {
        let text = comment(&cmds, &breaks);
        prop_assert_eq!(parse_comment(&text), as_parsed(&cmds), "{}", text);
    }

    /// The same commands in a fenced code block, a quote or an indented code block are
    /// not commands.
    #[test]
    fn commands_in_code_or_quotes_are_ignored((cmds, breaks) in commands(6), how in 0usize..3) {
        let text = comment(&cmds, &breaks);
        let wrapped = match how {
            0 => format!("```\n{text}\n```"),
            1 => text.lines().map(|l| format!("> {l}")).collect::<Vec<_>>().join("\n"),
            _ => text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
        };
        prop_assert_eq!(parse_comment(&wrapped), vec![], "{}", wrapped);
    }

    /// An edit that appends commands yields exactly the appended ones; re-saving the same
    /// text yields none.
    #[test]
    fn edits_yield_only_new_commands((old, breaks) in commands(6), (added, _) in commands(6)) {
        let before = comment(&old, &breaks);
        let all: Vec<(Command, Spelling)> = old.iter().chain(&added).cloned().collect();
        let after = comment(&all, &breaks);
        prop_assert_eq!(new_commands(Some(&before), &after), as_parsed(&added));
        prop_assert_eq!(new_commands(Some(&after), &after), vec![]);
        prop_assert_eq!(new_commands(None, &after), vec![]);
    }

    /// Any comment: no panic, no more commands than lines starting with `/`, and the byte
    /// caps on instructions and reasons hold.
    #[test]
    fn arbitrary_comments_keep_the_caps(
        text in "(\\PC|\n){0,300}|([/ a-zA-Z0-9\n>`-]{0,40}){0,8}",
        long in proptest::option::of(any::<char>()),
    ) {
        // A long argument tests the cut on a char boundary.
        let text = match long {
            Some(c) => format!("{text}\n/reject {}\n/countersign run a {}", c.to_string().repeat(1100), c.to_string().repeat(9000)),
            None => text,
        };
        let parsed = parse_comment(&text);
        prop_assert!(parsed.len() <= text.lines().filter(|l| l.contains('/')).count());
        for p in &parsed {
            match p {
                Parsed::Command(Command::Run { instructions: Some(i), .. }) => {
                    prop_assert!(!i.is_empty() && i.len() <= MAX_INSTRUCTIONS_BYTES);
                }
                Parsed::Command(Command::Reject { reason: Some(r) }) => {
                    prop_assert!(!r.is_empty() && r.len() <= MAX_REASON_BYTES);
                }
                Parsed::Invalid { text, .. } => prop_assert!(text.starts_with('/')),
                _ => {}
            }
        }
    }

    /// Sanitising is idempotent, keeps its cap, and leaves no invisible or control
    /// character.
    #[test]
    fn sanitising_is_idempotent_and_clean(text in markdown(true), max in prop_oneof![Just(16 * 1024), 0usize..200]) {
        let once = visible_markdown(&text, max);
        prop_assert!(once.text.len() <= max);
        prop_assert!(!once.text.chars().any(hidden_char), "{:?}", once.text);
        prop_assert_eq!(&visible_markdown(&text, max), &once, "not deterministic");
        let twice = visible_markdown(&once.text, max);
        prop_assert_eq!(&twice.text, &once.text, "input {:?}", text);
        prop_assert!(!twice.truncated);
    }

    /// Whatever hides text from a reader (comments, hidden elements, alt texts, titles,
    /// reference definitions, invisible characters) never reaches the agent.
    #[test]
    fn hidden_text_never_survives(text in hiding_markdown()) {
        let out = visible_markdown(&text, 64 * 1024);
        prop_assert!(!out.text.contains(SECRET), "input {:?}\noutput {:?}", text, out.text);
    }

    /// HTML comments, hidden elements and invisible characters never reach a title. (Its
    /// Markdown, and stray angle brackets, are shown as written: titles are plain text on
    /// GitHub.)
    #[test]
    fn hidden_html_never_reaches_a_title(
        parts in prop::collection::vec(prop::sample::select(vec![
            "Fix the login", "<b>bold</b>", "<!-- Zq7secret -->", "<span hidden>Zq7secret</span>",
            "<script>Zq7secret</script>", "<div style=\"display:none\">Zq7secret</div>",
            "\u{E005A}\u{E0071}", "&#8203;", " ", "\n",
        ]), 0..10),
    ) {
        let text = parts.concat();
        let title = visible_title(&text);
        prop_assert!(!title.contains(SECRET), "input {:?}\ntitle {:?}", text, title);
        prop_assert!(!title.chars().any(hidden_char), "{:?}", title);
    }

    /// Titles: one line, capped, visible characters only, never empty, and stable.
    #[test]
    fn titles_are_one_clean_stable_line(text in prop_oneof![markdown(true), "\\PC{0,400}", "[<>a-z/ !-]{0,40}"]) {
        let title = visible_title(&text);
        prop_assert!(!title.is_empty() && title.len() <= MAX_TITLE_BYTES);
        prop_assert!(!title.contains(['\n', '\r', '\t']));
        prop_assert!(!title.chars().any(hidden_char), "{:?}", title);
        prop_assert_eq!(title.trim(), title.as_str());
        if title != UNTITLED {
            prop_assert_eq!(visible_title(&title), title.clone(), "input {:?}", text);
        }
    }

    /// Compiling never panics, whatever the spec; evaluating a compiled policy scores
    /// within 0..=10, at the level its thresholds give, deterministically, with each
    /// factor the highest score of the rules that matched (Rego and incomplete changes
    /// aside), and never auto-approves an incomplete change or a never-auto-approve path.
    #[test]
    fn compiled_policies_score_within_range(spec in policy_spec(), change in change()) {
        let Some(spec) = read_spec(&spec) else { return Ok(()) };
        let Ok(policy) = CompiledPolicy::compile(&spec) else { return Ok(()) };
        let a = policy.evaluate(&change);
        prop_assert!(a.score <= MAX_SCORE);
        prop_assert!(a.factors.iter().all(|f| f.score <= MAX_SCORE));
        prop_assert_eq!(a.level, policy.level_of(a.score));
        prop_assert!(a.workflow.level >= a.level);
        prop_assert_eq!(&policy.evaluate(&change), &a);
        let again = CompiledPolicy::compile(&spec).expect("compiles twice");
        prop_assert_eq!(&again.evaluate(&change), &a);
        if change.incomplete.is_some() {
            prop_assert!(a.factors.iter().all(|f| f.score == MAX_SCORE));
            prop_assert!(!a.workflow.auto_approves());
        } else if spec.rego.is_none() {
            for (i, factor) in a.factors.iter().enumerate() {
                let best = a
                    .matched_rules
                    .iter()
                    .filter_map(|r| [r.set.impact, r.set.complexity, r.set.business_impact][i])
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(factor.score, best, "{:?}", factor);
            }
        }
        if !a.never_auto_approve.is_empty() {
            prop_assert!(!a.workflow.auto_approves());
        }
    }

    /// The order of the changed files does not change the score; adding a label never
    /// lowers it; without case-sensitive rules the case of a path does not matter.
    #[test]
    fn scores_ignore_order_and_only_rise_with_labels(spec in policy_spec(), change in change(), label in "[a-zA-Z:-]{1,10}") {
        let Some(spec) = read_spec(&spec) else { return Ok(()) };
        if spec.rego.is_some() {
            return Ok(());
        }
        let Ok(policy) = CompiledPolicy::compile(&spec) else { return Ok(()) };
        let a = policy.evaluate(&change);
        let mut reversed = change.clone();
        reversed.files.reverse();
        let b = policy.evaluate(&reversed);
        prop_assert_eq!(b.score, a.score);
        prop_assert_eq!(b.factors.map(|f| f.score), a.factors.clone().map(|f| f.score));
        let labelled = policy.evaluate(&change.clone().with_label(label));
        for (with, without) in labelled.factors.iter().zip(&a.factors) {
            prop_assert!(with.score >= without.score);
        }
        if !spec.rules.iter().any(|r| r.matches.case_sensitive) {
            let mut upper = change.clone();
            for f in &mut upper.files {
                f.path = f.path.to_ascii_uppercase();
            }
            prop_assert_eq!(policy.evaluate(&upper).score, a.score);
        }
    }
}

/// Regressions found by fuzzing and by the properties above (docs/fuzzing.md), each with
/// the input that failed.
mod regressions {
    use super::*;
    use countersign_policies::visible::NESTED_MARKUP;

    fn stable(text: &str) -> String {
        let once = visible_markdown(text, 16 * 1024).text;
        assert_eq!(visible_markdown(&once, 16 * 1024).text, once, "{text:?}");
        once
    }

    /// Removing a tag joined the text around it into a new one (the `sanitiser` fuzz
    /// target's first find): GitHub would hide what follows from whoever reads the result.
    #[test]
    fn tags_rebuilt_by_removing_tags_are_removed_too() {
        assert_eq!(stable("<<b>a>\n<sc<script>x</script>ript>"), "");
        let out = stable("Note <sp<b>an hidden>Zq7secret</sp</b>an> here");
        assert!(!out.contains(SECRET), "{out:?}");
        let out = stable("Note <scr\u{200B}ipt>Zq7secret</scr\u{200B}ipt> here");
        assert!(!out.contains(SECRET), "{out:?}");
    }

    /// Markdown inside a raw HTML block is shown as written; once the HTML around it was
    /// removed it became Markdown again, and the image's alt text was hidden on GitHub but
    /// not from the agent.
    #[test]
    fn markdown_freed_from_an_html_block_is_sanitised_too() {
        let out = stable("Please fix it.\n<!-- x --> ![Zq7secret](https://example.com/i.png)");
        assert!(!out.contains(SECRET), "{out:?}");
    }

    /// Markup nested deeper than the rounds allow is replaced, not passed on half-cleaned.
    #[test]
    fn markup_nested_too_deep_is_replaced() {
        // Each round removes one `<a>` and so makes the next.
        let text = format!("{}<b>{}", "<".repeat(10), "a>".repeat(10));
        let out = visible_markdown(&text, 16 * 1024);
        assert_eq!(out.text, NESTED_MARKUP);
        assert!(out.truncated);
    }

    /// Used reference definitions came back in a HashMap's order, different from one call
    /// to the next (found by the `sanitiser` fuzz target).
    #[test]
    fn reference_definitions_come_back_in_written_order() {
        let text = "[a][r] [b][s] [c][t]\n\n[t]: https://example.com/t\n[r]: https://example.com/r\n[s]: https://example.com/s";
        let first = stable(text);
        assert!(first.ends_with("[t]: <https://example.com/t>\n[r]: <https://example.com/r>\n[s]: <https://example.com/s>"), "{first:?}");
        for _ in 0..20 {
            assert_eq!(visible_markdown(text, 16 * 1024).text, first);
        }
        let found =
            "[a][r]\n\n[e\n~lr]: https][r]\n\n[e\n~lr]: https://examer cla][r]\n\n[r]: hte~\n";
        stable(found);
    }

    /// Titles: a tag rebuilt by removing a tag goes too.
    #[test]
    fn titles_rebuilt_from_tags_are_stable() {
        assert_eq!(visible_title("<<a>a>"), UNTITLED);
        assert_eq!(visible_title("Fix <<b>i>login"), "Fix login");
        // A no-break space was read as a space only after the tags were removed.
        assert_eq!(visible_title("<a\u{a0}>"), UNTITLED);
    }
}
