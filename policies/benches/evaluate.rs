//! Native engine vs the same decision in Rego (regorus): the default policy plus 200
//! generated rules, scored against a 10,000-file change.
//!
//! Run: `cargo bench -p countersign-policies --bench evaluate` (release profile). Prints a
//! table of medians; numbers are recorded in docs/benchmarks.md. Not a test: nothing here
//! asserts on time, only that both forms reach the same decision.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use countersign_crds::RiskPolicySpec;
use countersign_crds::risk_policy::{CombineMethod, FactorScores, RiskLevel, RiskRule, RuleMatch};
use countersign_policies::{Change, ChangedFile, CompiledPolicy, default_policy, level_name};

const EXTRA_RULES: usize = 200;
const FILES: usize = 10_000;

/// 200 rules in the shapes real policies use: per-service prefixes, per-component
/// directories anywhere, extension sets with exceptions, and labelled paths.
fn extra_rules() -> Vec<RiskRule> {
    (0..EXTRA_RULES)
        .map(|i| {
            let score = u8::try_from(2 + i % 6).expect("small");
            let matches = match i % 4 {
                0 => RuleMatch {
                    paths: vec![format!("services/svc-{i}/**")],
                    ..RuleMatch::default()
                },
                1 => RuleMatch {
                    paths: vec![format!("**/component_{i}/*.rs")],
                    ..RuleMatch::default()
                },
                2 => RuleMatch {
                    paths: vec![format!("libs/lib-{i}/src/**/*.{{rs,go}}")],
                    except_paths: vec!["**/*_test.go".to_owned()],
                    ..RuleMatch::default()
                },
                _ => RuleMatch {
                    paths: vec![format!("tools/tool-{i}/**"), format!("**/*.gen{i}")],
                    labels: vec![format!("team-{i}")],
                    ..RuleMatch::default()
                },
            };
            RiskRule {
                name: format!("generated-{i}"),
                description: None,
                matches,
                set: FactorScores {
                    impact: Some(score),
                    complexity: (i % 3 == 0).then_some(score),
                    business_impact: None,
                },
            }
        })
        .collect()
}

fn spec() -> RiskPolicySpec {
    let mut spec = default_policy().spec;
    spec.rules.extend(extra_rules());
    spec
}

/// A monorepo-wide change: services, libraries, docs and tests, plus one migration.
fn change() -> Change {
    let mut files: Vec<ChangedFile> = (0..FILES - 1)
        .map(|n| {
            let path = match n % 5 {
                0 => format!("services/svc-{}/src/handlers/module_{}.rs", n % 300, n),
                1 => format!("libs/lib-{}/src/internal/util_{}_test.go", n % 250, n),
                2 => format!("docs/services/svc-{}/page_{}.md", n % 300, n),
                3 => format!("web/src/component_{}/view_{}.tsx", n % 400, n),
                _ => format!("services/svc-{}/tests/integration_{}.rs", n % 300, n),
            };
            ChangedFile::new(path, 12, 3)
        })
        .collect();
    files.push(ChangedFile::new("migrations/0042_add_index.sql", 20, 0));
    Change {
        files,
        ..Change::default()
    }
}

fn rego_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn rego_set(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| rego_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The same policy as one Rego module, written the way an OPA user would: `glob.match` per
/// rule, helper rules for exceptions, `every` for only-paths.
fn to_rego(spec: &RiskPolicySpec) -> String {
    let mut out = String::from("package bench\n\n");
    for (i, rule) in spec.rules.iter().enumerate() {
        let m = &rule.matches;
        let mut body: Vec<String> = Vec::new();
        if !m.except_paths.is_empty() {
            let _ = writeln!(
                out,
                "ex_{i}(p) if {{ some g in {}; glob.match(g, [\"/\"], p) }}",
                rego_set(&m.except_paths)
            );
        }
        let paths = if m.paths.is_empty() && !m.except_paths.is_empty() {
            vec!["**".to_owned()]
        } else {
            m.paths.clone()
        };
        if !paths.is_empty() {
            let except = if m.except_paths.is_empty() {
                String::new()
            } else {
                format!("; not ex_{i}(f.path)")
            };
            let _ = writeln!(
                out,
                "paths_{i} if {{ some f in input.files; some g in {}; glob.match(g, [\"/\"], f.path){except} }}",
                rego_set(&paths)
            );
            body.push(format!("paths_{i}"));
        }
        if !m.only_paths.is_empty() {
            let _ = writeln!(
                out,
                "only_ok_{i}(p) if {{ some g in {}; glob.match(g, [\"/\"], p) }}",
                rego_set(&m.only_paths)
            );
            body.push("count(input.files) > 0".to_owned());
            body.push(format!("every f in input.files {{ only_ok_{i}(f.path) }}"));
        }
        if !m.labels.is_empty() {
            let labels: Vec<String> = m.labels.iter().map(|l| l.to_lowercase()).collect();
            body.push(format!(
                "some l in input.labels; lower(l) in {}",
                rego_set(&labels)
            ));
        }
        if let Some(n) = m.min_files {
            body.push(format!("count(input.files) >= {n}"));
        }
        if let Some(n) = m.min_lines {
            body.push(format!(
                "sum([n | f := input.files[_]; n := f.additions + f.deletions]) >= {n}"
            ));
        }
        if m.gitops_paths == Some(true) {
            body.push(
                "some f in input.files; some g in input.gitopsPaths; glob.match(g, [\"/\"], f.path)"
                    .to_owned(),
            );
        }
        if body.is_empty() {
            body.push("true".to_owned());
        }
        let _ = writeln!(out, "m_{i} if {{ {} }}", body.join("; "));
        for (factor, score) in [
            ("impact", rule.set.impact),
            ("complexity", rule.set.complexity),
            ("business", rule.set.business_impact),
        ] {
            if let Some(s) = score {
                let _ = writeln!(out, "{factor} contains {s} if m_{i}");
            }
        }
    }
    assert_eq!(spec.combine.method, CombineMethod::Max);
    let t = &spec.thresholds;
    let _ = write!(
        out,
        r#"
score := max({{max(impact | {{0}}), max(complexity | {{0}}), max(business | {{0}})}})

level := "critical" if score >= {c}
level := "high" if {{ score >= {h}; score < {c} }}
level := "medium" if {{ score >= {m}; score < {h} }}
level := "low" if score < {m}

decision := {{"score": score, "level": level}}
"#,
        c = t.critical,
        h = t.high,
        m = t.medium,
    );
    out
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    runs: usize,
}

fn measure<T>(runs: usize, mut f: impl FnMut() -> T) -> Stats {
    black_box(f()); // warm-up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        runs,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name:<44} | {:>6} | {:>12} | {:>12} | {:>12} |",
        s.runs,
        ms(s.median),
        ms(s.min),
        ms(s.max)
    );
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(51);
    let rego_runs: usize = std::env::var("BENCH_REGO_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let spec = spec();
    let change = change();
    let rules = spec.rules.len();

    let compile = measure(runs, || CompiledPolicy::compile(&spec).expect("compiles"));
    let policy = CompiledPolicy::compile(&spec).expect("compiles");
    let native = measure(runs, || policy.evaluate(&change));
    let decision = policy.evaluate(&change);

    if rego_runs == 0 {
        println!(
            "native: compile {} / evaluate {} (Rego skipped: BENCH_REGO_RUNS=0)",
            ms(compile.median),
            ms(native.median)
        );
        return;
    }
    let module = to_rego(&spec);
    let input = serde_json::to_string(&change).expect("serialises");
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("bench.rego".to_owned(), module.clone())
        .expect("the generated Rego parses");
    engine.set_input_json(&input).expect("input is JSON");
    let rego_eval = |engine: &mut regorus::Engine| {
        engine
            .eval_rule("data.bench.decision".to_owned())
            .expect("the generated Rego evaluates")
    };
    let rego_value = rego_eval(&mut engine);
    let rego_json: serde_json::Value =
        serde_json::from_str(&rego_value.to_json_str().expect("json")).expect("json");
    let rego = measure(rego_runs, || {
        let mut e = engine.clone();
        e.set_input_json(&input).expect("input is JSON");
        rego_eval(&mut e)
    });

    let same =
        rego_json["score"] == decision.score && rego_json["level"] == level_name(decision.level);
    println!(
        "policy: default + {EXTRA_RULES} generated = {rules} rules; change: {} files, {} lines; Rego module: {} lines",
        change.files.len(),
        change.total_lines(),
        module.lines().count()
    );
    println!(
        "decision: native score {} {} ({}), Rego {}; same decision: {}",
        decision.score,
        level_name(decision.level),
        decision.workflow.name,
        rego_json,
        if same { "yes" } else { "NO" }
    );
    println!();
    println!(
        "| {:<44} | {:>6} | {:>12} | {:>12} | {:>12} |",
        "case", "runs", "median", "min", "max"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(8),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(14)
    );
    row("native: compile policy", &compile);
    row("native: evaluate 10,000 files", &native);
    row("rego (regorus): evaluate 10,000 files", &rego);
    println!();
    println!(
        "native is {:.0}x faster than Rego (median); target: native < 5 ms and ≥ 20x",
        rego.median.as_secs_f64() / native.median.as_secs_f64()
    );
    assert!(
        same,
        "native and Rego disagree: {decision:#?} vs {rego_json}"
    );
    assert_eq!(decision.level, RiskLevel::Critical);
}
