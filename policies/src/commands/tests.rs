use super::*;

fn cmd(c: Command) -> Parsed {
    Parsed::Command(c)
}

fn run(agent: &str, instructions: Option<&str>) -> Parsed {
    cmd(Command::Run {
        agent: AgentName::parse(agent).expect("valid agent in test"),
        instructions: instructions.map(str::to_owned),
        breakdown: false,
    })
}

fn plan(agent: &str, instructions: Option<&str>) -> Parsed {
    cmd(Command::Run {
        agent: AgentName::parse(agent).expect("valid agent in test"),
        instructions: instructions.map(str::to_owned),
        breakdown: true,
    })
}

fn bad(text: &str, problem: CommandProblem) -> Parsed {
    Parsed::Invalid {
        text: text.to_owned(),
        problem,
    }
}

#[test]
fn parse_table() {
    use Command::*;
    let cases: Vec<(&str, &str, Vec<Parsed>)> = vec![
        ("plain approve", "/approve", vec![cmd(Approve)]),
        (
            "answer",
            "/countersign answer 410, please",
            vec![cmd(Answer {
                text: "410, please".into(),
            })],
        ),
        (
            "answer without text",
            "/countersign answer",
            vec![bad("/countersign answer", CommandProblem::MissingAnswer)],
        ),
        ("answer needs the namespace", "/answer 410", vec![]),
        ("upper case", "/APPROVE", vec![cmd(Approve)]),
        ("leading space", "   /hold", vec![cmd(Hold)]),
        ("namespaced", "/countersign approve", vec![cmd(Approve)]),
        (
            "namespaced mixed case",
            "/CounterSign UnHold",
            vec![cmd(Unhold)],
        ),
        ("mid paragraph", "please /approve this", vec![]),
        (
            "second line of paragraph",
            "Looks good.\n/approve",
            vec![cmd(Approve)],
        ),
        ("other bots", "/lgtm\n/assign @me\n/cc @bob", vec![]),
        (
            "unknown namespaced",
            "/countersign frobnicate",
            vec![bad(
                "/countersign frobnicate",
                CommandProblem::UnknownCommand("frobnicate".into()),
            )],
        ),
        (
            "bare namespace",
            "/countersign",
            vec![bad("/countersign", CommandProblem::MissingCommand)],
        ),
        (
            "run without agent",
            "/countersign run",
            vec![bad("/countersign run", CommandProblem::MissingAgent)],
        ),
        (
            "run upper-case agent",
            "/countersign run Backend",
            vec![bad(
                "/countersign run Backend",
                CommandProblem::InvalidAgentName("Backend".into()),
            )],
        ),
        (
            "run bad agent",
            "/countersign run -x",
            vec![bad(
                "/countersign run -x",
                CommandProblem::InvalidAgentName("-x".into()),
            )],
        ),
        ("plain run is another bot's", "/run backend", vec![]),
        (
            "run with instructions and second paragraph",
            "/countersign run backend fix the flaky test\nin ci/retry.rs\n\nThanks!",
            vec![run("backend", Some("fix the flaky test\nin ci/retry.rs"))],
        ),
        (
            "run without instructions",
            "/countersign run qa-1",
            vec![run("qa-1", None)],
        ),
        (
            "run then command",
            "/countersign run backend go\n/hold",
            vec![run("backend", Some("go")), cmd(Hold)],
        ),
        (
            "plan: a run that proposes a breakdown",
            "/countersign Plan architect split the invoices work\nby layer",
            vec![plan("architect", Some("split the invoices work\nby layer"))],
        ),
        ("plain plan is another bot's", "/plan architect", vec![]),
        (
            "plan without an agent",
            "/countersign plan",
            vec![bad("/countersign plan", CommandProblem::MissingAgent)],
        ),
        (
            "reject reason",
            "/reject   too risky  ",
            vec![cmd(Reject {
                reason: Some("too risky".into()),
            })],
        ),
        (
            "reject no reason",
            "/reject",
            vec![cmd(Reject { reason: None })],
        ),
        (
            "all kinds",
            "/retry\n/cancel\n/risk\n/help\n/unhold",
            vec![cmd(Retry), cmd(Cancel), cmd(Risk), cmd(Help), cmd(Unhold)],
        ),
        (
            "quoted review",
            "> /approve\n\nI disagree.\n/reject no tests",
            vec![cmd(Reject {
                reason: Some("no tests".into()),
            })],
        ),
        ("fenced", "```\n/approve\n```", vec![]),
        (
            "tilde fence",
            "~~~sh\n/approve\n~~~\n/hold",
            vec![cmd(Hold)],
        ),
        ("indented code", "text\n\n    /approve", vec![]),
        ("inline code", "`/approve`", vec![]),
        ("html comment", "<!-- /approve -->", vec![]),
        ("html block", "<div>\n/approve\n</div>", vec![]),
        ("link text", "[/approve](https://x)", vec![]),
        ("heading", "# /approve", vec![]),
        ("table", "| a |\n|---|\n| /approve |", vec![]),
        (
            "nested list",
            "- item\n  - /approve\n- /hold",
            vec![cmd(Approve), cmd(Hold)],
        ),
        (
            "crlf",
            "LGTM\r\n/approve\r\n\r\n/hold\r\n",
            vec![cmd(Approve), cmd(Hold)],
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(parse_comment(input), want, "case {name}: {input:?}");
    }
}

#[test]
fn limits() {
    let long = "x".repeat(20_000);
    let parsed = parse_comment(&format!("/countersign run backend {long}"));
    let [
        Parsed::Command(Command::Run {
            instructions: Some(i),
            ..
        }),
    ] = parsed.as_slice()
    else {
        panic!("expected a run, got {parsed:?}");
    };
    assert_eq!(i.len(), MAX_INSTRUCTIONS_BYTES);
    let parsed = parse_comment(&format!("/reject {}", "é".repeat(1000)));
    let [Parsed::Command(Command::Reject { reason: Some(r) })] = parsed.as_slice() else {
        panic!("expected a reject, got {parsed:?}");
    };
    assert!(r.len() <= MAX_REASON_BYTES && r.len() >= MAX_REASON_BYTES - 1);
    assert!(AgentName::parse(&"a".repeat(63)).is_ok());
    assert!(AgentName::parse(&"a".repeat(64)).is_err());
    assert!(AgentName::parse("a_b").is_err());
}

#[test]
fn names_and_kinds() {
    let table = [
        (Command::Approve, "approve", CommandKind::Approval),
        (
            Command::Reject { reason: None },
            "reject",
            CommandKind::Approval,
        ),
        (Command::Hold, "hold", CommandKind::Approval),
        (Command::Unhold, "unhold", CommandKind::Approval),
        (Command::Retry, "retry", CommandKind::Trigger),
        (Command::Cancel, "cancel", CommandKind::Trigger),
        (Command::Risk, "risk", CommandKind::Info),
        (Command::Help, "help", CommandKind::Info),
    ];
    for (c, name, kind) in table {
        assert_eq!((c.name(), c.kind()), (name, kind));
    }
}

#[test]
fn edits_are_a_multiset_diff() {
    use Command::*;
    let cases: Vec<(Option<&str>, &str, Vec<Parsed>)> = vec![
        (Some("/approve"), "/approve\n\n/approve", vec![cmd(Approve)]),
        (
            Some("/approve"),
            "/approve typo fixed",
            vec![cmd(Approve)].into_iter().take(0).collect(),
        ),
        (Some("LGTM"), "LGTM\n/hold", vec![cmd(Hold)]),
        (Some("/hold\n/approve"), "/approve", vec![]),
        (None, "/approve", vec![]),
    ];
    for (prev, cur, want) in cases {
        assert_eq!(new_commands(prev, cur), want, "{prev:?} -> {cur:?}");
    }
}

#[test]
fn help_lists_agents() {
    let h = help_text(&["backend", "qa"]);
    assert!(h.contains("/countersign plan <agent>"), "{h}");
    assert!(h.contains("`backend`, `qa`"));
    assert!(h.contains("/countersign run <agent>"));
    assert!(help_text(&[]).contains("No agents"));
}

#[test]
fn random_markdown_never_panics() {
    let seed: u64 = 0x5eed_c0de_1234_5678;
    println!("seed {seed:#x}");
    let mut x = seed;
    let pieces = [
        "/approve",
        "/countersign run ",
        "```",
        "~~~",
        "> ",
        "<!--",
        "-->",
        "`",
        "\n",
        " ",
        "[",
        "](",
        ")",
        "| a |",
        "- ",
        "é",
        "\r\n",
        "<div>",
        "*",
    ];
    for _ in 0..2000 {
        let mut s = String::new();
        for _ in 0..(x % 40) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(pieces[(x % pieces.len() as u64) as usize]);
        }
        let _ = parse_comment(&s);
        let _ = new_commands(Some(&s), &s);
        x = x.wrapping_add(1);
    }
}
