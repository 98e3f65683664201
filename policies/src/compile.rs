//! Turns a `RiskPolicySpec` into a [`CompiledPolicy`]: every glob is parsed once into one
//! combined globset (so a 10,000-file change is matched in one pass, not once per rule), the
//! Rego module is parsed and prepared, and every semantic rule the CRD's CEL enforces is
//! checked again, so a policy read from a file is held to the same standard as one applied
//! to the cluster. All problems are collected, each naming its field.

use std::collections::{HashMap, HashSet};

use countersign_crds::RiskPolicySpec;
use countersign_crds::risk_policy::{
    AuthorKind, CombineMethod, FactorScores, RiskLevel, RuleMatch, SeparationOfDuties, Thresholds,
    Workflow, Workflows,
};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{FieldPath, PolicyError, PolicyErrors, SpecProblem};
use crate::path_index::PathIndex;
use crate::rego::RegoPolicy;

/// The highest score a factor (and the combined score) can have.
pub const MAX_SCORE: u8 = 10;

/// A RiskPolicy ready to evaluate changes: immutable, cheap to share between threads, and
/// evaluated without IO by [`CompiledPolicy::evaluate`](crate::CompiledPolicy::evaluate).
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) index: PathIndex,
    /// `owners[g]`: the rules (and lists) that use distinct glob `g` of the index.
    pub(crate) owners: Vec<Vec<GlobOwner>>,
    /// `case_sensitive[g]`: glob `g` matches paths as written; every other glob is stored
    /// lower-cased and matches the lower-cased path (the default).
    pub(crate) case_sensitive: Vec<bool>,
    /// Whether any glob is case-sensitive (a second pass over each path is needed).
    pub(crate) any_case_sensitive: bool,
    pub(crate) combine: Combiner,
    pub(crate) thresholds: Thresholds,
    pub(crate) workflows: Workflows,
    pub(crate) never_auto_approve: Vec<String>,
    pub(crate) separation_of_duties: SeparationOfDuties,
    pub(crate) rego: Option<RegoPolicy>,
}

/// How factors become one score, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Combiner {
    Max,
    /// Percent weights of impact, complexity, businessImpact; they add up to 100.
    Weighted([u32; 3]),
}

/// One rule with its non-path conditions ready to test; its path globs live in the shared
/// [`PathIndex`].
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub name: String,
    /// impact, complexity, businessImpact.
    pub set: [Option<u8>; 3],
    pub paths: Vec<String>,
    pub except_paths: Vec<String>,
    pub only_paths: Vec<String>,
    /// Lower-cased: GitHub labels are case-insensitive.
    pub labels: Vec<String>,
    pub min_files: Option<u32>,
    pub min_lines: Option<u32>,
    pub author_kinds: Vec<AuthorKind>,
    pub base_branches: Option<NamedGlobs>,
    pub gitops_paths: Option<bool>,
    /// `exceptPaths` without `paths` means "any path except"; `paths` then holds `**`.
    pub implicit_paths: bool,
}

impl CompiledRule {
    pub fn has_path_conditions(&self) -> bool {
        !self.paths.is_empty() || !self.only_paths.is_empty()
    }
}

/// A list of globs as written plus their compiled set (indices line up).
#[derive(Debug, Clone)]
pub(crate) struct NamedGlobs {
    pub globs: Vec<String>,
    pub set: GlobSet,
}

/// Which list of a rule (or the policy) a glob came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobRole {
    Paths,
    Except,
    Only,
    NeverAutoApprove,
}

/// Who uses one distinct glob: the rule index (unused for never-auto-approve), which list,
/// and the position in that list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GlobOwner {
    pub rule: u32,
    pub role: GlobRole,
    pub position: u32,
}

/// Parses one glob the way every path glob in a policy is read: `*` and `?` stop at `/`,
/// `**` crosses directories, `{a,b}` alternates.
pub(crate) fn parse_glob(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

struct Compiler {
    errors: Vec<PolicyError>,
    /// Distinct globs by (case-sensitive, text as matched).
    distinct: HashMap<(bool, String), usize>,
    globs: Vec<(String, Glob)>,
    owners: Vec<Vec<GlobOwner>>,
    case_sensitive: Vec<bool>,
}

impl Compiler {
    fn glob(&mut self, field: String, glob: &str) -> Option<Glob> {
        match parse_glob(glob) {
            Ok(g) => Some(g),
            Err(source) => {
                self.errors.push(PolicyError::Glob {
                    field: FieldPath(field),
                    glob: glob.to_owned(),
                    source,
                });
                None
            }
        }
    }

    /// Adds the path globs of one list to the shared index: lower-cased unless
    /// `case_sensitive` (paths are lower-cased before they meet those globs).
    fn index_list(
        &mut self,
        field: &str,
        globs: &[String],
        rule: u32,
        role: GlobRole,
        case_sensitive: bool,
    ) {
        for (position, text) in globs.iter().enumerate() {
            let Some(written) = self.glob(format!("{field}[{position}]"), text) else {
                continue;
            };
            let (matched, glob) = if case_sensitive {
                (text.clone(), written)
            } else {
                let lower = text.to_lowercase();
                match parse_glob(&lower) {
                    Ok(g) => (lower, g),
                    Err(_) => (text.clone(), written),
                }
            };
            let key = (case_sensitive, matched.clone());
            let slot = match self.distinct.get(&key) {
                Some(&slot) => slot,
                None => {
                    self.globs.push((matched, glob));
                    self.owners.push(Vec::new());
                    self.case_sensitive.push(case_sensitive);
                    self.distinct.insert(key, self.globs.len() - 1);
                    self.globs.len() - 1
                }
            };
            self.owners[slot].push(GlobOwner {
                rule,
                role,
                position: u32::try_from(position).unwrap_or(u32::MAX),
            });
        }
    }

    fn named(&mut self, field: &str, globs: &[String]) -> Option<NamedGlobs> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        for (i, text) in globs.iter().enumerate() {
            match self.glob(format!("{field}[{i}]"), text) {
                Some(g) => {
                    builder.add(g);
                }
                None => ok = false,
            }
        }
        let set = builder.build().ok().filter(|_| ok)?;
        Some(NamedGlobs {
            globs: globs.to_vec(),
            set,
        })
    }

    fn spec_problem(&mut self, field: impl Into<FieldPath>, problem: SpecProblem) {
        self.errors.push(PolicyError::spec(field, problem));
    }
}

impl CompiledPolicy {
    /// Compiles a RiskPolicy spec. Returns every problem found, each naming its field, e.g.
    /// `spec.rules[3].match.paths[1]: invalid glob "src/[": unclosed character class; missing ']'`.
    pub fn compile(spec: &RiskPolicySpec) -> Result<Self, PolicyErrors> {
        let mut c = Compiler {
            errors: Vec::new(),
            distinct: HashMap::new(),
            globs: Vec::new(),
            owners: Vec::new(),
            case_sensitive: Vec::new(),
        };
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut names = HashSet::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            if !names.insert(rule.name.as_str()) {
                c.spec_problem(
                    format!("{field}.name"),
                    SpecProblem::DuplicateRuleName(rule.name.clone()),
                );
            }
            let set = check_scores(&mut c, &format!("{field}.set"), &rule.set);
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            rules.push(compile_rule(
                &mut c,
                &format!("{field}.match"),
                index,
                &rule.name,
                &rule.matches,
                set,
            ));
        }
        // Never case-sensitive: a path must not escape a human by its case.
        c.index_list(
            "spec.neverAutoApprovePaths",
            &spec.never_auto_approve_paths,
            0,
            GlobRole::NeverAutoApprove,
            false,
        );
        let combine = check_combine(&mut c, spec);
        check_thresholds(&mut c, &spec.thresholds);
        check_workflows(&mut c, &spec.workflows);
        let rego = spec
            .rego
            .as_ref()
            .and_then(|module| match RegoPolicy::compile(module) {
                Ok(r) => Some(r),
                Err(e) => {
                    c.errors.push(e);
                    None
                }
            });

        if let Some(errors) = PolicyErrors::from_vec(c.errors) {
            return Err(errors);
        }
        // Every glob was parsed on its own above, so building the index only fails on
        // resource limits; report that against the rules rather than panicking.
        let index = PathIndex::build(&c.globs).map_err(|source| {
            PolicyErrors::one(PolicyError::Glob {
                field: FieldPath::from("spec.rules"),
                glob: String::new(),
                source,
            })
        })?;
        Ok(Self {
            rules,
            index,
            owners: c.owners,
            any_case_sensitive: c.case_sensitive.iter().any(|s| *s),
            case_sensitive: c.case_sensitive,
            combine,
            thresholds: spec.thresholds.clone(),
            workflows: spec.workflows.clone(),
            never_auto_approve: spec.never_auto_approve_paths.clone(),
            separation_of_duties: spec.separation_of_duties.clone(),
            rego,
        })
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The names of the rules, in policy order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Whether the policy has a Rego module.
    pub fn has_rego(&self) -> bool {
        self.rego.is_some()
    }

    /// Who may not approve; the ApprovalGate applies it when counting approvals.
    pub fn separation_of_duties(&self) -> &SeparationOfDuties {
        &self.separation_of_duties
    }

    /// The workflow of a level, as written in the policy.
    pub fn workflow(&self, level: RiskLevel) -> &Workflow {
        workflow_of(&self.workflows, level)
    }
}

pub(crate) fn workflow_of(workflows: &Workflows, level: RiskLevel) -> &Workflow {
    match level {
        RiskLevel::Low => &workflows.low,
        RiskLevel::Medium => &workflows.medium,
        RiskLevel::High => &workflows.high,
        RiskLevel::Critical => &workflows.critical,
    }
}

fn compile_rule(
    c: &mut Compiler,
    field: &str,
    index: u32,
    name: &str,
    m: &RuleMatch,
    set: [Option<u8>; 3],
) -> CompiledRule {
    let implicit_paths = m.paths.is_empty() && !m.except_paths.is_empty();
    let paths = if implicit_paths {
        vec!["**".to_owned()]
    } else {
        m.paths.clone()
    };
    let exact = m.case_sensitive;
    c.index_list(
        &format!("{field}.paths"),
        &paths,
        index,
        GlobRole::Paths,
        exact,
    );
    c.index_list(
        &format!("{field}.exceptPaths"),
        &m.except_paths,
        index,
        GlobRole::Except,
        exact,
    );
    c.index_list(
        &format!("{field}.onlyPaths"),
        &m.only_paths,
        index,
        GlobRole::Only,
        exact,
    );
    let base_branches = if m.base_branches.is_empty() {
        None
    } else {
        c.named(&format!("{field}.baseBranches"), &m.base_branches)
    };
    CompiledRule {
        name: name.to_owned(),
        set,
        paths,
        except_paths: m.except_paths.clone(),
        only_paths: m.only_paths.clone(),
        labels: m.labels.iter().map(|l| l.to_lowercase()).collect(),
        min_files: m.min_files,
        min_lines: m.min_lines,
        author_kinds: m.author_kinds.clone(),
        base_branches,
        gitops_paths: m.gitops_paths,
        implicit_paths,
    }
}

fn check_scores(c: &mut Compiler, field: &str, set: &FactorScores) -> [Option<u8>; 3] {
    let scores = [set.impact, set.complexity, set.business_impact];
    if scores.iter().all(Option::is_none) {
        c.spec_problem(field, SpecProblem::EmptySet);
    }
    for (name, score) in ["impact", "complexity", "businessImpact"]
        .iter()
        .zip(scores)
    {
        if let Some(v) = score.filter(|v| *v > MAX_SCORE) {
            c.spec_problem(format!("{field}.{name}"), SpecProblem::ScoreOutOfRange(v));
        }
    }
    scores.map(|s| s.map(|v| v.min(MAX_SCORE)))
}

fn check_combine(c: &mut Compiler, spec: &RiskPolicySpec) -> Combiner {
    match spec.combine.method {
        CombineMethod::Max => Combiner::Max,
        CombineMethod::Weighted => match &spec.combine.weights {
            None => {
                c.spec_problem("spec.combine.weights", SpecProblem::MissingWeights);
                Combiner::Max
            }
            Some(w) => {
                let weights = [w.impact, w.complexity, w.business_impact].map(u32::from);
                let sum: u32 = weights.iter().sum();
                if sum != 100 {
                    c.spec_problem("spec.combine.weights", SpecProblem::WeightsSum(sum));
                }
                Combiner::Weighted(weights)
            }
        },
    }
}

fn check_thresholds(c: &mut Compiler, t: &Thresholds) {
    let rising = 1 <= t.medium && t.medium < t.high && t.high < t.critical;
    if !rising || t.critical > MAX_SCORE {
        c.spec_problem(
            "spec.thresholds",
            SpecProblem::ThresholdsNotRising {
                medium: t.medium,
                high: t.high,
                critical: t.critical,
            },
        );
    }
}

fn check_workflows(c: &mut Compiler, w: &Workflows) {
    for level in [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ] {
        let field = format!("spec.workflows.{}", level_name(level));
        let workflow = workflow_of(w, level);
        if !workflow.auto_approve && workflow.approvers.is_empty() {
            c.spec_problem(format!("{field}.approvers"), SpecProblem::NoApprovers);
        }
        let mut roles = HashSet::new();
        for (i, a) in workflow.approvers.iter().enumerate() {
            if !(1..=10).contains(&a.count) {
                c.spec_problem(
                    format!("{field}.approvers[{i}].count"),
                    SpecProblem::CountOutOfRange(a.count),
                );
            }
            if !roles.insert(a.role.as_str()) {
                c.spec_problem(
                    format!("{field}.approvers[{i}].role"),
                    SpecProblem::DuplicateRole(a.role.to_string()),
                );
            }
        }
        if workflow.on_timeout == countersign_crds::risk_policy::TimeoutAction::Escalate
            && workflow.escalate_to.is_none()
        {
            c.spec_problem(
                format!("{field}.escalateTo"),
                SpecProblem::MissingEscalateTo,
            );
        }
        if workflow.on_timeout != countersign_crds::risk_policy::TimeoutAction::Escalate
            && workflow.escalation_mode.is_some()
        {
            c.spec_problem(
                format!("{field}.escalationMode"),
                SpecProblem::EscalationModeWithoutEscalate,
            );
        }
    }
}

/// The lower-case name of a level, as written in `spec.workflows`.
pub fn level_name(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
        RiskLevel::Critical => "critical",
    }
}
