//! Who manages a repository (ARCHITECTURE.md §4, docs/security.md item 1).
//!
//! Two rules, applied by the bot and every reconciler through [`claim`]:
//!
//! 1. **The operator decides which namespaces may manage which GitHub owners and
//!    repositories** ([`RepositoryAllowList`], the `--allowed-repositories` flag of the bot and
//!    the controller). A Project outside its namespace's allowance manages nothing.
//! 2. **One repository is managed by exactly one Project, cluster-wide**: among the allowed,
//!    live Projects naming a repository (GitHub compares owner and name case-insensitively),
//!    the oldest by `creationTimestamp` owns it, ties broken by `uid`. A later Project for the
//!    same repository is told who owns it and gets nothing: no gates, runs, checks or tokens.
//!
//! A Project being deleted owns nothing, so the next oldest takes over. Pure: the callers
//! pass the Projects they see (a reflector store).

use std::fmt;

use countersign_crds::Project;

/// Why an `--allowed-repositories` entry cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowed repository entry {entry:?}: {problem} (expected NAMESPACE=OWNER/REPOSITORY, `*` \
     matching any run of characters, e.g. team-a=acme/* or *=acme/docs)"
)]
pub struct AllowListError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// One `NAMESPACE=OWNER/REPOSITORY` entry; each part is a pattern where `*` matches any run
/// of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    namespace: String,
    owner: String,
    repository: String,
}

/// Which namespaces may manage which repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryAllowList {
    entries: Vec<Entry>,
}

impl RepositoryAllowList {
    /// Parses entries such as `team-a=acme/*`, `*=acme/docs`, `platform=*/*`. Namespaces
    /// match exactly (they are lower-case); owners and repositories case-insensitively.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut parsed = Vec::new();
        for raw in entries {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let fail = |problem| AllowListError {
                entry: raw.to_owned(),
                problem,
            };
            let (namespace, repo) = raw.split_once('=').ok_or(fail("no `=`"))?;
            let (owner, repository) = repo.split_once('/').ok_or(fail("no `/`"))?;
            let (namespace, owner, repository) =
                (namespace.trim(), owner.trim(), repository.trim());
            if namespace.is_empty() || owner.is_empty() || repository.is_empty() {
                return Err(fail("an empty part"));
            }
            let ok = |s: &str, extra: &[u8]| {
                s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'*' || b == b'-' || extra.contains(&b)
                })
            };
            if !ok(namespace, b"") || !ok(owner, b"") || !ok(repository, b"._") {
                return Err(fail(
                    "characters a namespace, owner or repository cannot have",
                ));
            }
            parsed.push(Entry {
                namespace: namespace.to_owned(),
                owner: owner.to_ascii_lowercase(),
                repository: repository.to_ascii_lowercase(),
            });
        }
        Ok(Self { entries: parsed })
    }

    /// Every namespace may manage every repository: for a cluster that belongs to one team.
    pub fn everything() -> Self {
        Self::of("*", "*", "*")
    }

    /// Only `namespace` may manage repositories, any of them.
    pub fn namespace(namespace: &str) -> Self {
        Self::of(namespace, "*", "*")
    }

    /// No namespace may manage anything.
    pub fn nothing() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn of(namespace: &str, owner: &str, repository: &str) -> Self {
        Self {
            entries: vec![Entry {
                namespace: namespace.to_owned(),
                owner: owner.to_owned(),
                repository: repository.to_owned(),
            }],
        }
    }

    /// What a bot or controller enforces: the operator's list when given; otherwise, for a
    /// process that serves one namespace, that namespace may manage any repository; for a
    /// cluster-wide process, nothing (a shared cluster must say who may manage what).
    pub fn effective(explicit: Option<Self>, served_namespace: Option<&str>) -> Self {
        match (explicit, served_namespace) {
            (Some(list), _) => list,
            (None, Some(ns)) => Self::namespace(ns),
            (None, None) => Self::nothing(),
        }
    }

    /// Whether a Project in `namespace` may manage `owner/repository`.
    pub fn permits(&self, namespace: &str, owner: &str, repository: &str) -> bool {
        let (owner, repository) = (owner.to_ascii_lowercase(), repository.to_ascii_lowercase());
        self.entries.iter().any(|e| {
            wildcard(&e.namespace, namespace)
                && wildcard(&e.owner, &owner)
                && wildcard(&e.repository, &repository)
        })
    }

    /// Whether nothing is allowed at all (worth a loud warning at startup).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for RepositoryAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("<nothing>");
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{}={}/{}", e.namespace, e.owner, e.repository))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `pattern` (with `*` matching any run of characters) matches all of `text`.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Where a Project stands with its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It manages the repository.
    Owner,
    /// An older Project manages it; this one does nothing.
    ClaimedBy {
        /// The owner's namespace.
        namespace: String,
        /// The owner's name.
        name: String,
    },
    /// The operator did not allow this namespace to manage the repository.
    NotAllowed,
}

impl Claim {
    /// Whether the Project may act for its repository.
    pub fn owns(&self) -> bool {
        matches!(self, Self::Owner)
    }

    /// The `Ready` condition reason of a Project that does not own its repository.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Owner => "Ready",
            Self::ClaimedBy { .. } => "RepositoryClaimed",
            Self::NotAllowed => "RepositoryNotAllowed",
        }
    }

    /// A sentence for the Project's condition, naming the owner.
    pub fn message(&self, project: &Project) -> String {
        let repo = &project.spec.repository;
        match self {
            Self::Owner => format!("manages {}/{}", repo.owner, repo.name),
            Self::ClaimedBy { namespace, name } => format!(
                "{}/{} is managed by Project {namespace}/{name}, which claimed it first; this \
                 Project does nothing for it",
                repo.owner, repo.name
            ),
            Self::NotAllowed => format!(
                "namespace {} may not manage {}/{} (the operator's --allowed-repositories)",
                project.metadata.namespace.as_deref().unwrap_or_default(),
                repo.owner,
                repo.name
            ),
        }
    }
}

/// Whether `a` names the same repository as `b` (case-insensitive, as GitHub compares).
fn same_repository(a: &Project, owner: &str, name: &str) -> bool {
    a.spec.repository.owner.eq_ignore_ascii_case(owner)
        && a.spec.repository.name.eq_ignore_ascii_case(name)
}

fn same_project(a: &Project, b: &Project) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name,
    }
}

/// The Project that manages `owner/name` among `projects`: the oldest allowed, live one.
pub fn owner_of<'a, I>(
    projects: I,
    owner: &str,
    name: &str,
    allowed: &RepositoryAllowList,
) -> Option<&'a Project>
where
    I: IntoIterator<Item = &'a Project>,
{
    projects
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| same_repository(p, owner, name))
        .filter(|p| {
            allowed.permits(
                p.metadata.namespace.as_deref().unwrap_or_default(),
                owner,
                name,
            )
        })
        .min_by(|a, b| age_key(a).cmp(&age_key(b)))
}

/// Oldest first; objects without a timestamp (not stored yet) last; then uid, namespace and
/// name so every caller picks the same owner.
fn age_key(p: &Project) -> (bool, i64, i32, &str, &str, &str) {
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created.map_or(i64::MAX, |t| t.as_second()),
        created.map_or(0, |t| t.subsec_nanosecond()),
        p.metadata.uid.as_deref().unwrap_or_default(),
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Where `project` stands among `projects` (which should include it) under `allowed`.
pub fn claim<'a, I>(project: &Project, projects: I, allowed: &RepositoryAllowList) -> Claim
where
    I: IntoIterator<Item = &'a Project>,
{
    let repo = &project.spec.repository;
    let ns = project.metadata.namespace.as_deref().unwrap_or_default();
    if !allowed.permits(ns, &repo.owner, &repo.name) {
        return Claim::NotAllowed;
    }
    if project.metadata.deletion_timestamp.is_some() {
        // Going away: it keeps nothing, whoever is older.
        return Claim::ClaimedBy {
            namespace: ns.to_owned(),
            name: project.metadata.name.clone().unwrap_or_default(),
        };
    }
    let all: Vec<&Project> = projects.into_iter().collect();
    let candidates = all.iter().copied().chain(std::iter::once(project));
    match owner_of(candidates, &repo.owner, &repo.name, allowed) {
        Some(owner) if !same_project(owner, project) => Claim::ClaimedBy {
            namespace: owner.metadata.namespace.clone().unwrap_or_default(),
            name: owner.metadata.name.clone().unwrap_or_default(),
        },
        _ => Claim::Owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn project(ns: &str, name: &str, repo: &str, created: i64, uid: &str) -> Project {
        let (owner, repo) = repo.split_once('/').expect("owner/repo");
        let mut p: Project = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": name, "namespace": ns, "uid": uid},
            "spec": {"repository": {"owner": owner, "name": repo}}
        }))
        .expect("project");
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("time")));
        p
    }

    #[test]
    fn allow_lists_parse_and_match_with_wildcards() {
        let list =
            RepositoryAllowList::parse(&["team-a=acme/*", "*=acme/docs", " platform=*/* ", ""])
                .expect("valid");
        assert!(list.permits("team-a", "ACME", "api"));
        assert!(list.permits("team-b", "acme", "Docs"));
        assert!(!list.permits("team-b", "acme", "api"));
        assert!(list.permits("platform", "anyone", "anything"));
        assert!(!list.permits("team-a", "evil", "api"));
        let prefix = RepositoryAllowList::parse(&["team-*=acme/team-*-svc"]).expect("valid");
        assert!(prefix.permits("team-x", "acme", "team-x-svc"));
        assert!(!prefix.permits("ops", "acme", "team-x-svc"));
        assert!(!prefix.permits("team-x", "acme", "team-x-svc-old"));
        for bad in [
            "team-a",
            "team-a=acme",
            "=acme/x",
            "a=b/",
            "a b=c/d",
            "a=c/d;e",
        ] {
            assert!(RepositoryAllowList::parse(&[bad]).is_err(), "{bad}");
        }
        assert_eq!(list.to_string(), "team-a=acme/*,*=acme/docs,platform=*/*");
    }

    #[test]
    fn the_default_allows_a_served_namespace_and_nothing_cluster_wide() {
        let ns = RepositoryAllowList::effective(None, Some("team-a"));
        assert!(ns.permits("team-a", "acme", "api"));
        assert!(!ns.permits("team-b", "acme", "api"));
        let cluster = RepositoryAllowList::effective(None, None);
        assert!(cluster.is_empty());
        assert!(!cluster.permits("team-a", "acme", "api"));
        let explicit = RepositoryAllowList::everything();
        assert!(RepositoryAllowList::effective(Some(explicit), None).permits("x", "y", "z"));
    }

    #[test]
    fn the_oldest_allowed_live_project_owns_a_repository() {
        let all = RepositoryAllowList::everything();
        let first = project("team-a", "widgets", "acme/widgets", 100, "u-2");
        let later = project("team-b", "hijack", "ACME/Widgets", 200, "u-1");
        let other = project("team-c", "api", "acme/api", 50, "u-3");
        let projects = [first.clone(), later.clone(), other.clone()];
        assert_eq!(claim(&first, &projects, &all), Claim::Owner);
        assert_eq!(
            claim(&later, &projects, &all),
            Claim::ClaimedBy {
                namespace: "team-a".into(),
                name: "widgets".into()
            }
        );
        assert_eq!(claim(&other, &projects, &all), Claim::Owner);

        // Same second: the uid decides, the same way for everyone.
        let tie = project("team-d", "tie", "acme/widgets", 100, "u-0");
        let projects = [first.clone(), tie.clone()];
        assert_eq!(claim(&tie, &projects, &all), Claim::Owner);
        assert!(!claim(&first, &projects, &all).owns());

        // A Project being deleted hands the repository on.
        let mut going = first.clone();
        going.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(300).expect("t")));
        let projects = [going.clone(), later.clone()];
        assert_eq!(claim(&later, &projects, &all), Claim::Owner);
        assert!(!claim(&going, &projects, &all).owns());
    }

    #[test]
    fn a_namespace_outside_the_allow_list_neither_owns_nor_blocks() {
        let list = RepositoryAllowList::parse(&["team-b=acme/*"]).expect("valid");
        let squatter = project("team-x", "squat", "acme/widgets", 1, "u-1");
        let real = project("team-b", "widgets", "acme/widgets", 100, "u-2");
        let projects = [squatter.clone(), real.clone()];
        assert_eq!(claim(&squatter, &projects, &list), Claim::NotAllowed);
        assert_eq!(claim(&real, &projects, &list), Claim::Owner);
        assert_eq!(
            owner_of(&projects, "acme", "widgets", &list).map(|p| p.metadata.name.clone()),
            Some(Some("widgets".into()))
        );
        assert_eq!(Claim::NotAllowed.reason(), "RepositoryNotAllowed");
        assert!(
            Claim::ClaimedBy {
                namespace: "team-b".into(),
                name: "widgets".into()
            }
            .message(&squatter)
            .contains("team-b/widgets")
        );
    }
}
