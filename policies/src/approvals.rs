//! The approval rules (ARCHITECTURE.md §4) as a pure function: from the facts about a pull
//! request (its head and its change, who wrote, pushed and asked for it, every review and
//! comment decision, who holds which role) and the RiskPolicy's assessment to the gate's
//! phase, the requirements per role, and every decision with why it counts or not.
//!
//! The controller gathers the facts from GitHub; `POST /api/v1/simulate` builds them from
//! hypothetical reviewers. Both call [`evaluate_approvals`], so a simulation says exactly what
//! the gate will say.
//!
//! The rules, in the order they are applied to each decision:
//! 1. A person's latest decision (review or `/approve`/`/reject` command) replaces their
//!    earlier ones ([`InvalidReason::Superseded`]).
//! 2. A command someone else edited into a person's comment, inline review comment or review
//!    body does not count ([`InvalidReason::Tampered`]).
//! 3. Separation of duties: the agent's own accounts never approve; the author (unless
//!    switched off); for AI pull requests everyone who asked for the run (unless switched
//!    off); everyone who authored or committed a commit and everyone who pushed to the branch
//!    (always on AI pull requests, else as the switches say).
//! 4. Approvals are bound to content: one given on an older head counts only when that
//!    head's change (the diff from its merge base, as a fingerprint) is the current change —
//!    a clean rebase keeps approvals, any other push makes them stale
//!    ([`InvalidReason::Stale`]). A comment command whose head the bot never recorded counts
//!    for no head ([`InvalidReason::HeadUnknown`]).
//! 5. An approval counts only for a role the person holds; each person fills at most one
//!    required slot, assigned so that as many slots as possible are filled.
//! 6. After an escalation in `standIn` mode, one approval by a holder of the escalation role
//!    who fills no other slot satisfies every requirement that was missing at the deadline
//!    ([`StandIn`]); an escalation in `additional` mode adds one required approval of its role
//!    instead.
//!
//! A rejection by anyone holding a role rejects, whatever the head. `/hold` blocks until it
//! is lifted: `/unhold` lifts the holds of the same person and of people ranked no higher
//! ([`role_rank`]: developer < tech_lead < manager < security_team < cto, other roles and
//! no role lowest), and a security hold (one by a `security_team` member) is never lifted by
//! the pull request's author. Low-risk workflows auto-approve with the reason recorded,
//! unless a never-auto-approve path changed (the assessment already decided that) or an
//! escalation happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use countersign_crds::approval_gate::{
    ApprovalRecord, ApprovalVia, Decision, InvalidReason, RoleRequirement,
};
use countersign_crds::risk_policy::SeparationOfDuties;
use countersign_crds::{GatePhase, GitHubUser, RoleName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::assessment::{Assessment, AutoApprove};

/// The most decisions a gate status keeps (its CRD schema's `maxItems`); the newest win.
pub const MAX_RECORDS: usize = 200;

/// What someone said about the pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// An approving review or `/approve`.
    Approve,
    /// A changes-requested review or `/reject`.
    Reject,
    /// `/hold`.
    Hold,
    /// `/unhold`.
    Unhold,
}

/// One decision, hold or unhold, as read from GitHub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// Who. Accounts without an id (deleted users) never count.
    pub user: GitHubUser,
    /// What.
    pub kind: SignalKind,
    /// Where.
    pub via: ApprovalVia,
    /// The head commit it was given on; `None` when nobody recorded it (a comment the bot
    /// never received): an approval then counts for no head.
    pub sha: Option<String>,
    /// When.
    pub time: Timestamp,
    /// The comment was edited by someone other than its author.
    pub tampered: bool,
}

/// Everything the rules need to know about a pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullFacts {
    /// The current head commit.
    pub head_sha: String,
    /// The fingerprint of the current change (its diff from the merge base); `None` when it
    /// could not be read completely: then only approvals on the current head count.
    pub change_id: Option<String>,
    /// Who opened the pull request.
    pub author: Option<GitHubUser>,
    /// Whether an agent wrote the change.
    pub ai_generated: bool,
    /// Everyone who asked for the AI run: who started it and whoever asked for a retry.
    pub requesters: Vec<GitHubUser>,
    /// The agent's own accounts (Countersign's bot user), which never approve.
    pub agent_accounts: Vec<GitHubUser>,
    /// Everyone who authored or committed a commit of the pull request.
    pub committers: Vec<GitHubUser>,
    /// Everyone who pushed to the pull request's branch.
    pub pushers: Vec<GitHubUser>,
    /// The change fingerprint of each known head, for approvals given on older heads;
    /// heads missing here count as a different change.
    pub changes: BTreeMap<String, String>,
    /// Every decision, hold and unhold, in any order (sorted by time here).
    pub signals: Vec<Signal>,
    /// The Project roles of each person who said something, by user id.
    pub roles: HashMap<u64, BTreeSet<RoleName>>,
    /// Roles added by escalations in `additional` mode, each needing one approval on top of
    /// the workflow's.
    pub escalated_roles: Vec<RoleName>,
    /// Escalations in `standIn` mode: roles whose holders may approve in place of the roles
    /// missing at the deadline.
    pub stand_ins: Vec<StandIn>,
    /// GitHub shows a head whose push event has not been received yet: who pushed it is not
    /// known, so nothing approves (not even automatically) until it is.
    pub awaiting_push: bool,
}

/// An escalation in `standIn` mode: one approval by a holder of `role` who fills no other
/// slot satisfies each requirement of `for_roles` that is still short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandIn {
    /// The escalation role (the workflow's `escalateTo`).
    pub role: RoleName,
    /// The roles that were missing at the deadline.
    pub for_roles: Vec<RoleName>,
}

/// What the rules concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Pending, Approved, Rejected or Held.
    pub phase: GatePhase,
    /// Approvals needed per role and who filled them.
    pub requirements: Vec<RoleRequirement>,
    /// Every decision, oldest first, valid or with the reason it does not count.
    pub records: Vec<ApprovalRecord>,
    /// Who put the pull request on hold, while held.
    pub held_by: Option<GitHubUser>,
    /// Who rejected it (valid rejections of each person's latest decision).
    pub rejected_by: Vec<GitHubUser>,
    /// Why the change approved itself, for auto-approved levels.
    pub auto_approved: Option<String>,
}

impl Verdict {
    /// The roles whose requirement is not met yet.
    pub fn missing_roles(&self) -> impl Iterator<Item = &RoleRequirement> {
        self.requirements.iter().filter(|r| r.satisfied < r.count)
    }

    /// Who can supply the missing approvals: each missing role, then the role that may
    /// stand in for it, without repeats.
    pub fn roles_to_ask(&self) -> Vec<RoleName> {
        let mut roles: Vec<RoleName> = Vec::new();
        for r in self.missing_roles() {
            for role in std::iter::once(&r.role).chain(r.stand_in.as_ref()) {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        }
        roles
    }
}

/// Applies the approval rules to `facts` under `assessment` (the RiskPolicy's decision about
/// the change) and the policy's separation-of-duties switches.
pub fn evaluate_approvals(
    assessment: &Assessment,
    duties: &SeparationOfDuties,
    facts: &PullFacts,
) -> Verdict {
    let mut signals: Vec<&Signal> = facts.signals.iter().collect();
    signals.sort_by_key(|s| s.time);

    let held_by = hold_state(&signals, facts);

    // Each person's latest approve/reject is the one that counts.
    let decisions: Vec<&Signal> = signals
        .iter()
        .copied()
        .filter(|s| matches!(s.kind, SignalKind::Approve | SignalKind::Reject))
        .collect();
    let mut latest: HashMap<Key, usize> = HashMap::new();
    for (i, s) in decisions.iter().enumerate() {
        latest.insert(key(&s.user), i);
    }

    let requirements = required_roles(assessment, facts);
    let mut records = Vec::with_capacity(decisions.len());
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut rejected_by = Vec::new();
    for (i, s) in decisions.iter().enumerate() {
        let roles = s
            .user
            .id
            .and_then(|id| facts.roles.get(&id))
            .cloned()
            .unwrap_or_default();
        let decision = match s.kind {
            SignalKind::Reject => Decision::Reject,
            _ => Decision::Approve,
        };
        let invalid = if latest.get(&key(&s.user)) != Some(&i) {
            Some(InvalidReason::Superseded)
        } else if s.tampered {
            Some(InvalidReason::Tampered)
        } else if decision == Decision::Reject {
            // Blocking is always safe: any role holder's rejection stands, on any head.
            roles.is_empty().then_some(InvalidReason::NotInRole)
        } else {
            approval_problem(s, duties, facts).or_else(|| {
                let fits = requirements.iter().any(|r| {
                    roles.contains(&r.role)
                        || r.stand_in.as_ref().is_some_and(|s| roles.contains(s))
                });
                (!fits).then_some(InvalidReason::NotInRole)
            })
        };
        let index = records.len();
        if invalid.is_none() {
            match decision {
                Decision::Reject => rejected_by.push(s.user.clone()),
                Decision::Approve => {
                    let holds = |role: Option<&RoleName>| role.is_some_and(|r| roles.contains(r));
                    let fitting = |pred: &dyn Fn(&RoleRequirement) -> bool| -> Vec<usize> {
                        requirements
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| pred(r))
                            .map(|(j, _)| j)
                            .collect()
                    };
                    candidates.push(Candidate {
                        record: index,
                        roles: fitting(&|r| holds(Some(&r.role))),
                        stands_in: fitting(&|r| holds(r.stand_in.as_ref())),
                    });
                }
            }
        }
        records.push(ApprovalRecord {
            user: s.user.clone(),
            roles: roles.into_iter().collect(),
            decision,
            sha: s.sha.clone().unwrap_or_default(),
            time: Time(s.time),
            via: s.via,
            valid: invalid.is_none(),
            invalid_reason: invalid,
        });
    }

    let requirements = fill(requirements, &candidates, &records);
    let auto_approved = match &assessment.workflow.auto_approve {
        AutoApprove::Approved { reason }
            if facts.escalated_roles.is_empty() && facts.stand_ins.is_empty() =>
        {
            Some(reason.clone())
        }
        _ => None,
    };
    let satisfied = requirements.iter().all(|r| r.satisfied >= r.count);
    let phase = if held_by.is_some() {
        GatePhase::Held
    } else if !rejected_by.is_empty() {
        GatePhase::Rejected
    } else if facts.awaiting_push {
        GatePhase::Pending
    } else if auto_approved.is_some() || (satisfied && !requirements.is_empty()) {
        GatePhase::Approved
    } else {
        GatePhase::Pending
    };
    if records.len() > MAX_RECORDS {
        records.drain(..records.len() - MAX_RECORDS);
    }
    Verdict {
        phase,
        requirements,
        records,
        held_by,
        rejected_by,
        auto_approved,
    }
}

/// How senior a role is for lifting holds: developer 1, tech_lead 2, manager 3,
/// security_team 4, cto 5; any other role 0 (as is having no role).
pub fn role_rank(role: &RoleName) -> u8 {
    match role.0.as_str() {
        "developer" => 1,
        "tech_lead" => 2,
        "manager" => 3,
        SECURITY_ROLE => 4,
        "cto" => 5,
        _ => 0,
    }
}

/// The role whose holds are security holds.
pub const SECURITY_ROLE: &str = "security_team";

/// A hold in force.
struct Hold {
    by: GitHubUser,
    rank: u8,
    security: bool,
}

/// Who holds the pull request: holds stack (one per person); `/unhold` lifts the unholder's
/// own hold and every hold by someone ranked no higher, except that the author never lifts a
/// security hold. The highest-ranked remaining holder (the latest among equals) is reported.
fn hold_state(sorted: &[&Signal], facts: &PullFacts) -> Option<GitHubUser> {
    let roles_of = |u: &GitHubUser| {
        u.id.and_then(|id| facts.roles.get(&id))
            .cloned()
            .unwrap_or_default()
    };
    let rank = |u: &GitHubUser| roles_of(u).iter().map(role_rank).max().unwrap_or(0);
    let is_author = |u: &GitHubUser| facts.author.as_ref().is_some_and(|a| same_person(a, u));
    let mut holds: Vec<Hold> = Vec::new();
    for s in sorted.iter().filter(|s| !s.tampered) {
        match s.kind {
            SignalKind::Hold => {
                holds.retain(|h| !same_person(&h.by, &s.user));
                holds.push(Hold {
                    by: s.user.clone(),
                    rank: rank(&s.user),
                    security: roles_of(&s.user).iter().any(|r| r.0 == SECURITY_ROLE),
                });
            }
            SignalKind::Unhold => {
                let (lifter, author) = (rank(&s.user), is_author(&s.user));
                holds.retain(|h| {
                    let own = same_person(&h.by, &s.user);
                    let may = own || (h.rank <= lifter && !(h.security && author));
                    !may
                });
            }
            _ => {}
        }
    }
    holds
        .iter()
        .enumerate()
        .max_by_key(|(i, h)| (h.rank, *i))
        .map(|(_, h)| h.by.clone())
}

/// Why an approval cannot count, before roles are considered.
fn approval_problem(
    s: &Signal,
    duties: &SeparationOfDuties,
    facts: &PullFacts,
) -> Option<InvalidReason> {
    let Some(_) = s.user.id else {
        return Some(InvalidReason::NotInRole);
    };
    let same = |other: &GitHubUser| same_person(&s.user, other);
    if facts.agent_accounts.iter().any(same) {
        return Some(InvalidReason::Agent);
    }
    if duties.exclude_author && facts.author.as_ref().is_some_and(same) {
        return Some(InvalidReason::SelfApproval);
    }
    if facts.ai_generated && duties.exclude_requester && facts.requesters.iter().any(same) {
        return Some(InvalidReason::Requester);
    }
    if (facts.ai_generated || duties.exclude_committers) && facts.committers.iter().any(same) {
        return Some(InvalidReason::Committer);
    }
    if (facts.ai_generated || duties.exclude_pushers) && facts.pushers.iter().any(same) {
        return Some(InvalidReason::Pusher);
    }
    let Some(sha) = s.sha.as_deref() else {
        return Some(InvalidReason::HeadUnknown);
    };
    let fresh = sha == facts.head_sha
        || facts
            .change_id
            .as_ref()
            .is_some_and(|current| facts.changes.get(sha) == Some(current));
    (!fresh).then_some(InvalidReason::Stale)
}

/// The workflow's approver requirements plus one approval per role escalated in addition,
/// each marked with the role that may stand in for it; none when the change auto-approves.
fn required_roles(assessment: &Assessment, facts: &PullFacts) -> Vec<RoleRequirement> {
    let workflow = &assessment.workflow;
    let requirement = |role: &RoleName, count: u32| RoleRequirement {
        role: role.clone(),
        count: count.max(1),
        satisfied: 0,
        approved_by: Vec::new(),
        stand_in: None,
        stood_in_by: None,
    };
    let mut requirements: Vec<RoleRequirement> = if workflow.auto_approves() {
        Vec::new()
    } else {
        workflow
            .approvers
            .iter()
            .map(|a| requirement(&a.role, a.count))
            .collect()
    };
    for role in &facts.escalated_roles {
        if !requirements.iter().any(|r| &r.role == role) {
            requirements.push(requirement(role, 1));
        }
    }
    for stand_in in &facts.stand_ins {
        for r in requirements.iter_mut().filter(|r| {
            r.stand_in.is_none() && r.role != stand_in.role && stand_in.for_roles.contains(&r.role)
        }) {
            r.stand_in = Some(stand_in.role.clone());
        }
    }
    requirements
}

/// A valid approval and the requirements its author can fill.
struct Candidate {
    /// Its index in the records.
    record: usize,
    /// Requirements whose role the person holds.
    roles: Vec<usize>,
    /// Requirements the person may stand in for (they hold its `standIn` role).
    stands_in: Vec<usize>,
}

/// Who fills what: the candidates filling each requirement's slots, and the candidate
/// standing in for some requirements.
struct Assignment {
    filled: Vec<Vec<usize>>,
    stood_in: Option<(usize, Vec<usize>)>,
}

impl Assignment {
    /// (requirements met, approvals counted): more is better.
    fn rank(&self, requirements: &[RoleRequirement]) -> (usize, usize) {
        let stood = |j: usize| self.stood_in.as_ref().is_some_and(|(_, s)| s.contains(&j));
        let met = requirements
            .iter()
            .enumerate()
            .filter(|(j, r)| stood(*j) || self.filled[*j].len() >= r.count as usize)
            .count();
        let counted =
            self.filled.iter().map(Vec::len).sum::<usize>() + usize::from(self.stood_in.is_some());
        (met, counted)
    }
}

/// Assigns approvers to role slots, one slot per person, filling as many as possible
/// (augmenting paths; earlier approvals are placed first, so the result is deterministic).
/// Where someone may stand in (an escalation in `standIn` mode), each such person is tried
/// as the stand-in, kept out of the other slots; a stand-in is used only when it meets more
/// requirements, and the earliest approval wins a tie.
fn fill(
    mut requirements: Vec<RoleRequirement>,
    candidates: &[Candidate],
    records: &[ApprovalRecord],
) -> Vec<RoleRequirement> {
    let mut best = Assignment {
        filled: assign(&requirements, candidates, None),
        stood_in: None,
    };
    for (c, candidate) in candidates.iter().enumerate() {
        if candidate.stands_in.is_empty() {
            continue;
        }
        let filled = assign(&requirements, candidates, Some(c));
        let short: Vec<usize> = candidate
            .stands_in
            .iter()
            .copied()
            .filter(|&j| filled[j].len() < requirements[j].count as usize)
            .collect();
        if short.is_empty() {
            continue;
        }
        let option = Assignment {
            filled,
            stood_in: Some((c, short)),
        };
        if option.rank(&requirements) > best.rank(&requirements) {
            best = option;
        }
    }
    let login = |c: usize| records[candidates[c].record].user.login.clone();
    for (j, r) in requirements.iter_mut().enumerate() {
        r.satisfied = u32::try_from(best.filled[j].len()).unwrap_or(u32::MAX);
        r.approved_by = best.filled[j].iter().map(|&c| login(c)).collect();
        r.approved_by.sort();
        if let Some((c, stood)) = &best.stood_in
            && stood.contains(&j)
        {
            r.satisfied = r.count;
            r.stood_in_by = Some(login(*c));
        }
    }
    requirements
}

/// The maximum matching of candidates (all but `skip`) to role slots: for each requirement,
/// the candidates filling its slots.
fn assign(
    requirements: &[RoleRequirement],
    candidates: &[Candidate],
    skip: Option<usize>,
) -> Vec<Vec<usize>> {
    // slot → requirement index; holder[slot] = candidate index
    let slots: Vec<usize> = requirements
        .iter()
        .enumerate()
        .flat_map(|(j, r)| std::iter::repeat_n(j, r.count as usize))
        .collect();
    let mut holder: Vec<Option<usize>> = vec![None; slots.len()];
    for c in (0..candidates.len()).filter(|c| Some(*c) != skip) {
        let mut seen = vec![false; slots.len()];
        augment(c, candidates, &slots, &mut holder, &mut seen);
    }
    let mut filled = vec![Vec::new(); requirements.len()];
    for (slot, who) in holder.iter().enumerate() {
        if let Some(c) = who {
            filled[slots[slot]].push(*c);
        }
    }
    filled
}

fn augment(
    c: usize,
    candidates: &[Candidate],
    slots: &[usize],
    holder: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for slot in 0..slots.len() {
        if seen[slot] || !candidates[c].roles.contains(&slots[slot]) {
            continue;
        }
        seen[slot] = true;
        let free = match holder[slot] {
            None => true,
            Some(other) => augment(other, candidates, slots, holder, seen),
        };
        if free {
            holder[slot] = Some(c);
            return true;
        }
    }
    false
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Id(u64),
    Login(String),
}

fn key(user: &GitHubUser) -> Key {
    match user.id {
        Some(id) => Key::Id(id),
        None => Key::Login(user.login.to_ascii_lowercase()),
    }
}

/// Whether two accounts are the same person: by id when both have one, else by login.
pub fn same_person(a: &GitHubUser, b: &GitHubUser) -> bool {
    match (a.id, b.id) {
        (Some(x), Some(y)) => x == y,
        _ => a.login.eq_ignore_ascii_case(&b.login),
    }
}

#[cfg(test)]
mod tests;
