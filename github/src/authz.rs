//! Who may do what: starting and steering agent runs (triggers) and approver roles.
//!
//! The deciding half is pure ([`check_trigger`], [`roles_of`]): it takes facts already
//! fetched from GitHub and a Project's rules. [`Authorizer`] fetches those facts — repository
//! permission, team membership by user id (cached with a TTL) — through the App client.
//! A denial is a value ([`Denial`]) the caller turns into a visible reply, never an error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::users::{Account, AccountKind};
use countersign_crds::project::{RepoPermission, Triggers};
use countersign_crds::{GitHubTeam, GitHubUser, Project, RoleName};
use tokio::time::Instant;

use crate::{GitHubError, InstallationClient, Permission};

/// How long team memberships are trusted before they are fetched again.
pub const TEAM_CACHE_TTL: Duration = Duration::from_secs(120);

/// Teams whose members are cached at once; the oldest entries go first.
const TEAM_CACHE_CAPACITY: usize = 1024;

/// Why someone may not do what they asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Countersign's own account: it never reacts to itself.
    OwnBot,
    /// Another bot or App, and the Project does not allow bots.
    Bot,
    /// Not enough repository permission.
    Permission {
        /// What the person has.
        have: Permission,
        /// What the Project requires.
        need: RepoPermission,
    },
    /// The Project restricts triggers to listed users and teams, and this person is in none.
    NotAnAllowedTriggerer,
    /// The command needs an approver role on the Project, and this person holds none.
    NoRole,
}

impl Denial {
    /// A sentence for the reply on GitHub, addressed to `login`.
    pub fn explain(&self, login: &str) -> String {
        match self {
            Self::OwnBot => "Countersign ignores its own comments.".to_owned(),
            Self::Bot => format!(
                "@{login} is a bot; this Project does not let bots start or steer agent runs \
                 (`spec.triggers.allowBots`)."
            ),
            Self::Permission { have, need } => format!(
                "@{login}, starting or steering Countersign agents here needs {} permission on \
                 the repository; you have {}.",
                permission_word(*need),
                have.role_name()
            ),
            Self::NotAnAllowedTriggerer => format!(
                "@{login}, this Project only lets the users and teams listed in \
                 `spec.triggers.allowedUsers` / `allowedTeams` start or steer agent runs."
            ),
            Self::NoRole => format!(
                "@{login}, this command needs an approver role on this Project (see \
                 `spec.roles`); you hold none."
            ),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OwnBot => "own_bot",
            Self::Bot => "bot",
            Self::Permission { .. } => "permission",
            Self::NotAnAllowedTriggerer => "not_allowed",
            Self::NoRole => "no_role",
        }
    }
}

fn permission_word(p: RepoPermission) -> &'static str {
    match p {
        RepoPermission::Read => "read",
        RepoPermission::Triage => "triage",
        RepoPermission::Write => "write",
        RepoPermission::Maintain => "maintain",
        RepoPermission::Admin => "admin",
    }
}

impl Permission {
    /// Whether this permission is at least `need`.
    pub fn satisfies(self, need: RepoPermission) -> bool {
        let need = match need {
            RepoPermission::Read => Self::Read,
            RepoPermission::Triage => Self::Triage,
            RepoPermission::Write => Self::Write,
            RepoPermission::Maintain => Self::Maintain,
            RepoPermission::Admin => Self::Admin,
        };
        self >= need
    }
}

/// Whether `account` is Countersign's own bot (`login` is `<slug>[bot]`).
pub fn is_own_bot(account: &Account, bot_login: &str) -> bool {
    account.login.eq_ignore_ascii_case(bot_login)
}

/// Decides before any GitHub call whether an account may trigger at all: never our own bot,
/// other bots only when the Project allows them.
pub fn check_actor(account: &Account, bot_login: &str, triggers: &Triggers) -> Result<(), Denial> {
    if is_own_bot(account, bot_login) {
        return Err(Denial::OwnBot);
    }
    if account.kind == AccountKind::Bot && !triggers.allow_bots {
        return Err(Denial::Bot);
    }
    Ok(())
}

/// What GitHub says about the person triggering.
#[derive(Clone, Debug)]
pub struct TriggerFacts {
    /// Their permission on the repository.
    pub permission: Permission,
    /// Whether they are a member of one of `triggers.allowedTeams` (false when none listed).
    pub in_allowed_team: bool,
}

/// Decides whether `account` may start or steer runs under `triggers`: the permission floor
/// always applies; when users or teams are listed, the person must also be one of them.
pub fn check_trigger(
    account: &Account,
    facts: &TriggerFacts,
    triggers: &Triggers,
) -> Result<(), Denial> {
    if !facts.permission.satisfies(triggers.min_permission) {
        return Err(Denial::Permission {
            have: facts.permission,
            need: triggers.min_permission,
        });
    }
    let restricted = !triggers.allowed_users.is_empty() || !triggers.allowed_teams.is_empty();
    if restricted
        && !triggers.allowed_users.iter().any(|u| same_user(u, account))
        && !facts.in_allowed_team
    {
        return Err(Denial::NotAnAllowedTriggerer);
    }
    Ok(())
}

/// Whether a configured user is this account: by immutable id when the Project gives one,
/// by login (case-insensitive, as GitHub logins are) otherwise.
pub fn same_user(user: &GitHubUser, account: &Account) -> bool {
    match user.id {
        Some(id) => id == account.id,
        None => user.login.eq_ignore_ascii_case(&account.login),
    }
}

/// The roles `account` holds on `project`, given the member ids of each team the Project
/// binds (teams missing from `team_members` count as having no members).
pub fn roles_of(
    project: &Project,
    account: &Account,
    team_members: &HashMap<String, Arc<HashSet<u64>>>,
) -> BTreeSet<RoleName> {
    project
        .spec
        .roles
        .iter()
        .filter(|binding| {
            binding.users.iter().any(|u| same_user(u, account))
                || binding.teams.iter().any(|t| {
                    team_members
                        .get(&team_key(t))
                        .is_some_and(|ids| ids.contains(&account.id))
                })
        })
        .map(|binding| binding.role.clone())
        .collect()
}

fn team_key(team: &GitHubTeam) -> String {
    team.slug.to_ascii_lowercase()
}

/// Team member ids by (org, team slug), with when they were fetched.
type TeamCache = HashMap<(String, String), (Instant, Arc<HashSet<u64>>)>;

/// Fetches authorisation facts from GitHub, caching team memberships for [`TEAM_CACHE_TTL`].
#[derive(Debug, Default)]
pub struct Authorizer {
    teams: Mutex<TeamCache>,
}

impl Authorizer {
    /// Facts for `check_trigger` about `account` on the Project's repository.
    pub async fn trigger_facts(
        &self,
        github: &InstallationClient,
        project: &Project,
        account: &Account,
    ) -> Result<TriggerFacts, GitHubError> {
        let repo = &project.spec.repository;
        let permission = github
            .repo_permission(&repo.owner, &repo.name, &account.login)
            .await?;
        let mut in_allowed_team = false;
        for team in &project.spec.triggers.allowed_teams {
            if self
                .team_members(github, &repo.owner, team)
                .await?
                .contains(&account.id)
            {
                in_allowed_team = true;
                break;
            }
        }
        Ok(TriggerFacts {
            permission,
            in_allowed_team,
        })
    }

    /// The roles `account` holds on `project`, resolving team bindings by user id.
    pub async fn roles(
        &self,
        github: &InstallationClient,
        project: &Project,
        account: &Account,
    ) -> Result<BTreeSet<RoleName>, GitHubError> {
        let owner = &project.spec.repository.owner;
        let mut members = HashMap::new();
        for binding in &project.spec.roles {
            // Direct user bindings need no call; only fetch teams when they could matter.
            if binding.users.iter().any(|u| same_user(u, account)) {
                continue;
            }
            for team in &binding.teams {
                let key = team_key(team);
                if let std::collections::hash_map::Entry::Vacant(slot) = members.entry(key) {
                    slot.insert(self.team_members(github, owner, team).await?);
                }
            }
        }
        Ok(roles_of(project, account, &members))
    }

    async fn team_members(
        &self,
        github: &InstallationClient,
        org: &str,
        team: &GitHubTeam,
    ) -> Result<Arc<HashSet<u64>>, GitHubError> {
        let key = (org.to_ascii_lowercase(), team_key(team));
        let now = Instant::now();
        if let Some((at, ids)) = self.lock().get(&key)
            && now.saturating_duration_since(*at) < TEAM_CACHE_TTL
        {
            return Ok(ids.clone());
        }
        let ids: Arc<HashSet<u64>> = Arc::new(
            github
                .team_member_ids(org, &team.slug)
                .await?
                .into_iter()
                .collect(),
        );
        let mut teams = self.lock();
        if teams.len() >= TEAM_CACHE_CAPACITY
            && let Some(oldest) = teams
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            teams.remove(&oldest);
        }
        teams.insert(key, (now, ids.clone()));
        Ok(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TeamCache> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.teams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
