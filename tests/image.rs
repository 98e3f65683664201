//! The container image's contract, checked without a Docker engine (none runs here): the
//! Dockerfile's runtime stage runs as a non-root user, its entrypoint is the `countersign`
//! binary the controller's default agent command and the chart's arguments name, and it
//! installs the Debian package of every shared library the binary links (from `ldd` of the
//! binary built for these tests, mapped to packages with `dpkg -S`), no fewer.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile")
}

/// The instructions of the last stage (`FROM … AS runtime` onwards), continuation lines joined.
fn runtime_stage() -> Vec<String> {
    let text = dockerfile().replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    assert!(lines[start].ends_with("AS runtime"), "{}", lines[start]);
    lines[start..].to_vec()
}

fn instruction<'a>(stage: &'a [String], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix(name).map(str::trim))
        .collect()
}

#[test]
fn the_runtime_stage_runs_as_a_non_root_user() {
    let stage = runtime_stage();
    let users = instruction(&stage, "USER ");
    let user = users.last().expect("a USER instruction");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("a numeric uid (runAsNonRoot can only verify numbers)");
    assert_ne!(uid, 0, "USER {user}");
    // The chart runs pods as the same user.
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/countersign/values.yaml"
    ))
    .expect("values");
    assert!(
        values.contains(&format!("runAsUser: {uid}")),
        "chart runAsUser"
    );
}

#[test]
fn the_entrypoint_is_the_binary_every_pod_runs() {
    let stage = runtime_stage();
    let entrypoint = instruction(&stage, "ENTRYPOINT ");
    let entrypoint: Vec<String> =
        serde_json::from_str(entrypoint.last().expect("ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/countersign"]);
    let copies = instruction(&stage, "COPY ");
    assert!(
        copies
            .iter()
            .any(|c| c.ends_with("/usr/local/bin/countersign") && c.contains("--from=build")),
        "{copies:?}"
    );
    // Agent pods start `countersign agent` through PATH (the controller's default command);
    // /usr/local/bin is on every Debian image's PATH.
    let args: Vec<&str> = countersign_controller::config::DEFAULT_AGENT_COMMAND
        .split(',')
        .collect();
    assert_eq!(args, ["countersign", "agent"]);
    // The subcommands the chart passes exist.
    for subcommand in ["controller", "bot", "agent"] {
        let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args([subcommand, "--help"])
            .output()
            .expect("runs");
        assert!(out.status.success(), "countersign {subcommand} --help");
    }
    assert!(
        instruction(&stage, "ENV ")
            .iter()
            .any(|e| e.contains("HOME=/tmp"))
    );
}

#[test]
fn the_runtime_stage_installs_what_the_binary_links() {
    let Ok(ldd) = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_countersign"))
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ldd is missing"
        );
        eprintln!("SKIPPED: no ldd");
        return;
    };
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        libraries.iter().any(|l| l.contains("libssl")),
        "git2 links OpenSSL: {libraries:?}"
    );
    let mut needed = BTreeSet::new();
    for library in &libraries {
        let out = Command::new("dpkg")
            .args(["-S"])
            .arg(std::fs::canonicalize(library).unwrap_or_else(|_| library.into()))
            .output();
        let owner = match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            // dpkg knows the file by its unmerged /lib path.
            _ => {
                let name = Path::new(library).file_name().expect("name");
                let out = Command::new("dpkg")
                    .arg("-S")
                    .arg(format!("*/{}", name.to_string_lossy()))
                    .output()
                    .expect("dpkg runs (a Debian machine builds the image's binaries)");
                String::from_utf8_lossy(&out.stdout)
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            }
        };
        assert!(!owner.is_empty(), "no Debian package owns {library}");
        needed.insert(owner);
    }
    // In every debian:*-slim image (Priority: required).
    let base: BTreeSet<&str> = ["libc6", "libgcc-s1", "zlib1g"].into();
    let stage = runtime_stage();
    let installed: BTreeSet<String> = instruction(&stage, "RUN ")
        .iter()
        .flat_map(|run| {
            run.split("&&")
                .filter(|c| c.contains("apt-get install"))
                .flat_map(|c| c.split_whitespace())
                .filter(|w| !w.starts_with('-') && !matches!(*w, "apt-get" | "install"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    for package in &needed {
        assert!(
            base.contains(package.as_str()) || installed.contains(package),
            "the binary links a library of {package}, which the runtime stage does not install \
             (installs {installed:?})"
        );
    }
    // Nothing but what is linked, plus the CA certificates HTTPS needs.
    for package in &installed {
        assert!(
            needed.contains(package) || package == "ca-certificates",
            "the runtime stage installs {package}, which nothing needs"
        );
    }
}
