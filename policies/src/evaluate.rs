//! Evaluates a [`CompiledPolicy`] against a [`Change`]: one pass over the changed files
//! through the policy's combined globset, then each rule's remaining conditions, the Rego
//! module, the combination of factors, the level and the workflow. Pure and infallible: a
//! failing Rego module fails closed inside the returned [`Assessment`].

use countersign_crds::risk_policy::{FactorScores, RiskLevel, TimeoutAction};
use globset::{Candidate, GlobSet, GlobSetBuilder};

use crate::assessment::{
    Assessment, AutoApprove, FACTORS, FactorResult, HitSource, MatchedRule, NeverAutoApproveHit,
    REGO_RULE, RegoVerdict, WorkflowDecision, factor_index, factor_name,
};
use crate::change::{Change, author_kind_name};
use crate::compile::{
    Combiner, CompiledPolicy, CompiledRule, GlobRole, MAX_SCORE, level_name, parse_glob,
    workflow_of,
};
use crate::path_index::Scratch;

/// What one pass over the files found for one rule.
#[derive(Debug, Default, Clone)]
struct RuleScan {
    /// Files left out by `exceptPaths`.
    excepted: u32,
    /// Non-excepted files matching `paths`.
    path_hits: u32,
    /// The first such file and the position of the glob it matched.
    first_path: Option<(usize, u32)>,
    /// Non-excepted files matching `onlyPaths`.
    only_hits: u32,
    /// Which `onlyPaths` globs matched something (first 64).
    only_globs: u64,
}

/// Per-file scratch flags for one rule, reset after each file.
#[derive(Debug, Default, Clone, Copy)]
struct FileFlags {
    touched: bool,
    except: bool,
    path_glob: Option<u32>,
    only_glob: Option<u32>,
}

/// The Project's GitOps globs, compiled for one evaluation.
struct GitOpsGlobs {
    globs: Vec<String>,
    set: GlobSet,
}

impl GitOpsGlobs {
    fn new(paths: &[String]) -> Option<Self> {
        if paths.is_empty() {
            return None;
        }
        let mut builder = GlobSetBuilder::new();
        let mut globs = Vec::new();
        for p in paths {
            // Matched against lower-cased paths, like every path glob by default.
            let lower = p.to_lowercase();
            // A bad glob from a Project is read literally rather than dropped: dropping it
            // would silently take deploy paths out of scoring.
            let glob = parse_glob(&lower).or_else(|_| parse_glob(&globset::escape(&lower)));
            if let Ok(g) = glob {
                builder.add(g);
                globs.push(p.clone());
            }
            let plain = !p.contains(['*', '?', '[', '{']);
            if plain && let Ok(g) = parse_glob(&format!("{}/**", lower.trim_end_matches('/'))) {
                builder.add(g);
                globs.push(p.clone());
            }
        }
        let set = builder.build().ok()?;
        Some(Self { globs, set })
    }
}

/// Everything the file pass found.
struct Scan {
    rules: Vec<RuleScan>,
    never: Vec<NeverAutoApproveHit>,
    /// Files under GitOps paths: the first one's index, and how many.
    gitops_first: Option<usize>,
    gitops_count: u32,
}

impl CompiledPolicy {
    /// Scores a change. Never fails: the decision, including "this needs the CTO", is a value.
    pub fn evaluate(&self, change: &Change) -> Assessment {
        let scan = self.scan(change);
        let mut factors: [FactorResult; 3] = FACTORS.map(|f| FactorResult {
            factor: f,
            score: 0,
            rule: None,
            reason: format!("{} 0: no rule set it", factor_name(f)),
        });
        let mut matched_rules = Vec::new();
        for (rule, rs) in self.rules.iter().zip(&scan.rules) {
            let Some(evidence) = rule_evidence(rule, rs, change, &scan) else {
                continue;
            };
            let evidence = render_evidence(&rule.name, &evidence);
            for (slot, score) in factors.iter_mut().zip(rule.set) {
                if let Some(score) = score.filter(|s| *s > slot.score) {
                    slot.score = score;
                    slot.rule = Some(rule.name.clone());
                    slot.reason = format!("{} {score}: {evidence}", factor_name(slot.factor));
                }
            }
            matched_rules.push(MatchedRule {
                name: rule.name.clone(),
                set: FactorScores {
                    impact: rule.set[0],
                    complexity: rule.set[1],
                    business_impact: rule.set[2],
                },
                evidence,
            });
        }
        let rego = self.rego.as_ref().map(|r| {
            let verdict = match serde_json::to_string(change) {
                Ok(json) => r.evaluate(&json),
                Err(e) => Err(format!("cannot serialise the change: {e}")),
            };
            apply_rego(&mut factors, verdict)
        });
        let mut rego_failed = matches!(rego, Some(RegoVerdict::Failed { .. }));
        if let Some(why) = &change.incomplete {
            fail_closed(&mut factors, why);
            // Like a failing Rego module: nothing about this change may approve itself.
            rego_failed = true;
        }
        let score = self.combine_scores(&factors);
        let level = self.level_of(score);
        let workflow = self.decide_workflow(score, level, &scan.never, rego_failed);
        Assessment {
            score,
            level,
            factors,
            matched_rules,
            workflow,
            never_auto_approve: scan.never,
            rego,
        }
    }

    /// One pass over the changed files through the combined globset.
    fn scan(&self, change: &Change) -> Scan {
        let mut rules = vec![RuleScan::default(); self.rules.len()];
        let mut flags = vec![FileFlags::default(); self.rules.len()];
        let mut touched: Vec<usize> = Vec::new();
        let mut scratch = Scratch::default();
        let mut never = Vec::new();
        let gitops = GitOpsGlobs::new(&change.gitops_paths);
        let mut gitops_matches = Vec::new();
        let (mut gitops_first, mut gitops_count) = (None, 0u32);
        for (fi, file) in change.files.iter().enumerate() {
            let lower = file.path.to_lowercase();
            let candidate = Candidate::new(&lower);
            let mut hit = |g: usize| {
                for owner in &self.owners[g] {
                    if owner.role == GlobRole::NeverAutoApprove {
                        never.push(NeverAutoApproveHit {
                            path: file.path.clone(),
                            glob: self.never_auto_approve[owner.position as usize].clone(),
                            source: HitSource::Policy,
                        });
                        continue;
                    }
                    let r = owner.rule as usize;
                    let f = &mut flags[r];
                    if !f.touched {
                        f.touched = true;
                        touched.push(r);
                    }
                    match owner.role {
                        GlobRole::Paths => f.path_glob = min_some(f.path_glob, owner.position),
                        GlobRole::Only => f.only_glob = min_some(f.only_glob, owner.position),
                        GlobRole::Except => f.except = true,
                        GlobRole::NeverAutoApprove => {}
                    }
                }
            };
            // Globs are lower-cased unless their rule is case-sensitive; those see the path
            // as written in a second pass.
            self.index
                .for_each_match(&lower, &candidate, &mut scratch, |g| {
                    if !self.case_sensitive[g] {
                        hit(g);
                    }
                });
            if self.any_case_sensitive {
                let exact = Candidate::new(&file.path);
                self.index
                    .for_each_match(&file.path, &exact, &mut scratch, |g| {
                        if self.case_sensitive[g] {
                            hit(g);
                        }
                    });
            }
            for &r in &touched {
                let f = std::mem::take(&mut flags[r]);
                let rs = &mut rules[r];
                if f.except {
                    rs.excepted += 1;
                    continue;
                }
                if let Some(g) = f.path_glob {
                    rs.path_hits += 1;
                    rs.first_path.get_or_insert((fi, g));
                }
                if let Some(g) = f.only_glob {
                    rs.only_hits += 1;
                    if g < 64 {
                        rs.only_globs |= 1 << g;
                    }
                }
            }
            touched.clear();
            if let Some(gitops) = &gitops {
                gitops
                    .set
                    .matches_candidate_into(&candidate, &mut gitops_matches);
                if let Some(&g) = gitops_matches.first() {
                    gitops_count += 1;
                    gitops_first.get_or_insert(fi);
                    never.push(NeverAutoApproveHit {
                        path: file.path.clone(),
                        glob: gitops.globs[g].clone(),
                        source: HitSource::GitOps,
                    });
                }
            }
        }
        Scan {
            rules,
            never,
            gitops_first,
            gitops_count,
        }
    }

    fn combine_scores(&self, factors: &[FactorResult; 3]) -> u8 {
        match self.combine {
            Combiner::Max => factors.iter().map(|f| f.score).max().unwrap_or(0),
            Combiner::Weighted(weights) => {
                let total: u32 = factors
                    .iter()
                    .zip(weights)
                    .map(|(f, w)| u32::from(f.score) * w)
                    .sum();
                // Rounded up: a weighted score never understates the risk.
                u8::try_from(total.div_ceil(100))
                    .unwrap_or(MAX_SCORE)
                    .min(MAX_SCORE)
            }
        }
    }

    /// The level a combined score falls in.
    pub fn level_of(&self, score: u8) -> RiskLevel {
        let t = &self.thresholds;
        if score >= t.critical {
            RiskLevel::Critical
        } else if score >= t.high {
            RiskLevel::High
        } else if score >= t.medium {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }

    fn decide_workflow(
        &self,
        score: u8,
        level: RiskLevel,
        never: &[NeverAutoApproveHit],
        rego_failed: bool,
    ) -> WorkflowDecision {
        let own = workflow_of(&self.workflows, level);
        let blocked_by = if !own.auto_approve {
            None
        } else if let Some(hit) = never.first() {
            let more = match never.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let what = match hit.source {
                HitSource::Policy => "never-auto-approve path",
                HitSource::GitOps => "GitOps path",
            };
            Some(format!("{} matched {what} {}{more}", hit.path, hit.glob))
        } else if rego_failed {
            Some("the Rego module failed or the change could not be read completely".to_owned())
        } else {
            None
        };
        // An approver-less auto-approve workflow cannot require a human; borrow the first
        // higher level's workflow that names approvers.
        let applied_level = match (&blocked_by, own.approvers.is_empty()) {
            (Some(_), true) => [RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical]
                .into_iter()
                .filter(|l| *l > level)
                .find(|l| !workflow_of(&self.workflows, *l).approvers.is_empty())
                .unwrap_or(level),
            _ => level,
        };
        let applied = workflow_of(&self.workflows, applied_level);
        let auto_approve = match blocked_by {
            Some(why) => AutoApprove::Blocked {
                reason: if applied_level == level {
                    format!(
                        "auto-approve is off: {why}; workflow {} needs humans",
                        own.name
                    )
                } else {
                    format!(
                        "auto-approve is off: {why}; workflow {} ({}) applies instead of {}",
                        applied.name,
                        level_name(applied_level),
                        own.name
                    )
                },
            },
            None if own.auto_approve => AutoApprove::Approved {
                reason: format!(
                    "score {score} is {} (below {}); workflow {} auto-approves",
                    level_name(level),
                    self.next_threshold(level),
                    own.name
                ),
            },
            None => AutoApprove::NotOffered,
        };
        WorkflowDecision {
            level: applied_level,
            name: applied.name.clone(),
            approvers: applied.approvers.clone(),
            auto_approve,
            timeout: applied.timeout,
            on_timeout: applied.on_timeout,
            escalate_to: applied.escalate_to.clone(),
            escalation_mode: (applied.on_timeout == TimeoutAction::Escalate)
                .then(|| applied.escalation_mode.unwrap_or_default()),
        }
    }

    fn next_threshold(&self, level: RiskLevel) -> String {
        let t = &self.thresholds;
        match level {
            RiskLevel::Low => format!("medium {}", t.medium),
            RiskLevel::Medium => format!("high {}", t.high),
            RiskLevel::High => format!("critical {}", t.critical),
            RiskLevel::Critical => "nothing".to_owned(),
        }
    }
}

fn min_some(current: Option<u32>, candidate: u32) -> Option<u32> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

/// One condition that held, e.g. subject `migrations/0042.sql`, detail `migrations/**`.
struct Evidence {
    subject: String,
    detail: Option<String>,
}

fn ev(subject: String, detail: Option<String>) -> Evidence {
    Evidence { subject, detail }
}

fn and_more(subject: &str, hits: u32, noun: &str) -> String {
    match hits {
        0 | 1 => subject.to_owned(),
        2 => format!("{subject} and 1 other {noun}"),
        n => format!("{subject} and {} other {noun}s", n - 1),
    }
}

/// Checks every condition of a rule; `None` when one fails, else what each matched.
fn rule_evidence(
    rule: &CompiledRule,
    rs: &RuleScan,
    change: &Change,
    scan: &Scan,
) -> Option<Vec<Evidence>> {
    let mut out = Vec::new();
    let files = u32::try_from(change.files.len()).unwrap_or(u32::MAX);
    if !rule.paths.is_empty() {
        let (fi, g) = rs.first_path?;
        let glob = &rule.paths[g as usize];
        let detail = if rule.implicit_paths {
            format!("except {}", rule.except_paths.join(", "))
        } else {
            glob.clone()
        };
        out.push(ev(
            and_more(&change.files[fi].path, rs.path_hits, "file"),
            Some(detail),
        ));
    }
    if !rule.only_paths.is_empty() {
        let considered = files.saturating_sub(rs.excepted);
        if considered == 0 || rs.only_hits != considered {
            return None;
        }
        let used: Vec<&str> = rule
            .only_paths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= 64 || rs.only_globs & (1 << i) != 0)
            .map(|(_, g)| g.as_str())
            .collect();
        out.push(ev(
            match (change.files.as_slice(), considered) {
                ([only], _) => only.path.clone(),
                (_, n) => format!("all {n} changed files"),
            },
            Some(format!("only {}", used.join(", "))),
        ));
    }
    if !rule.labels.is_empty() {
        let label = change
            .labels
            .iter()
            .find(|l| rule.labels.contains(&l.to_lowercase()))?;
        out.push(ev(format!("label {label}"), None));
    }
    if let Some(min) = rule.min_files {
        if files < min {
            return None;
        }
        out.push(ev(
            format!("{files} changed files"),
            Some(format!("≥ {min}")),
        ));
    }
    if let Some(min) = rule.min_lines {
        let lines = change.total_lines();
        if lines < u64::from(min) {
            return None;
        }
        out.push(ev(
            format!("{lines} changed lines"),
            Some(format!("≥ {min}")),
        ));
    }
    if !rule.author_kinds.is_empty() {
        if !rule.author_kinds.contains(&change.author_kind) {
            return None;
        }
        out.push(ev(
            format!("author kind {}", author_kind_name(change.author_kind)),
            None,
        ));
    }
    if let Some(branches) = &rule.base_branches {
        let base = change.base_branch.as_deref()?;
        let g = *branches.set.matches(base).first()?;
        out.push(ev(
            format!("base branch {base}"),
            Some(branches.globs[g].clone()),
        ));
    }
    match (rule.gitops_paths, scan.gitops_first) {
        (Some(true), Some(fi)) => out.push(ev(
            and_more(&change.files[fi].path, scan.gitops_count, "file"),
            Some(format!("GitOps paths {}", change.gitops_paths.join(", "))),
        )),
        (Some(true), None) => return None,
        (Some(false), Some(_)) => return None,
        (Some(false), None) => out.push(ev("no file under GitOps paths".to_owned(), None)),
        (None, _) => {}
    }
    if out.is_empty() && !rule.has_path_conditions() {
        out.push(ev("every change".to_owned(), None));
    }
    Some(out)
}

/// `migrations/0042.sql matched rule data-migration (migrations/**)`, or for several
/// conditions `src/a.rs (src/**) and label ai matched rule ai-code`.
fn render_evidence(rule: &str, evidence: &[Evidence]) -> String {
    match evidence {
        [one] => match &one.detail {
            Some(d) => format!("{} matched rule {rule} ({d})", one.subject),
            None => format!("{} matched rule {rule}", one.subject),
        },
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|e| match &e.detail {
                    Some(d) => format!("{} ({d})", e.subject),
                    None => e.subject.clone(),
                })
                .collect();
            format!("{} matched rule {rule}", parts.join(" and "))
        }
    }
}

/// The rule name quoted when an incomplete change fails closed.
pub const INCOMPLETE_RULE: &str = "incomplete-change";

/// Every factor to 10: the change could not be read completely, so it scores the maximum.
fn fail_closed(factors: &mut [FactorResult; 3], why: &str) {
    for slot in factors.iter_mut() {
        slot.score = MAX_SCORE;
        slot.rule = Some(INCOMPLETE_RULE.to_owned());
        slot.reason = format!(
            "{} {MAX_SCORE}: the changed-file list is incomplete, so the policy fails closed: {why}",
            factor_name(slot.factor)
        );
    }
}

/// Raises factors from the Rego module; on failure every factor goes to 10 (fail closed).
fn apply_rego(
    factors: &mut [FactorResult; 3],
    verdict: Result<crate::rego::RegoOutcome, String>,
) -> RegoVerdict {
    match verdict {
        Ok(outcome) => {
            let because = if outcome.reasons.is_empty() {
                "set by the Rego module".to_owned()
            } else {
                outcome.reasons.join("; ")
            };
            let mut raised = Vec::new();
            for (factor, score) in outcome.factors {
                let slot = &mut factors[factor_index(factor)];
                if score > slot.score {
                    slot.score = score;
                    slot.rule = Some(REGO_RULE.to_owned());
                    slot.reason = format!("{} {score}: {because}", factor_name(factor));
                    raised.push(factor);
                }
            }
            raised.sort();
            RegoVerdict::Evaluated {
                raised,
                reasons: outcome.reasons,
            }
        }
        Err(error) => {
            for slot in factors.iter_mut() {
                slot.score = MAX_SCORE;
                slot.rule = Some(REGO_RULE.to_owned());
                slot.reason = format!(
                    "{} {MAX_SCORE}: the Rego module failed, so the policy fails closed: {error}",
                    factor_name(slot.factor)
                );
            }
            RegoVerdict::Failed { error }
        }
    }
}
