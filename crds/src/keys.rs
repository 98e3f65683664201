//! Label and annotation keys shared by the bot (which creates and nudges objects) and the
//! controller (which reconciles them). They are part of the API: users select on the labels
//! (`kubectl get csrun -l countersign.dev/issue=42`) and see the annotations.

/// Label on AgentRuns and ApprovalGates: the Project they belong to.
pub const PROJECT_LABEL: &str = "countersign.dev/project";
/// Label on AgentRuns: the issue number they work on.
pub const ISSUE_LABEL: &str = "countersign.dev/issue";
/// Label on AgentRuns (and their pods): the Agent doing the work.
pub const AGENT_LABEL: &str = "countersign.dev/agent";
/// Label on ApprovalGates: the pull request number.
pub const PULL_REQUEST_LABEL: &str = "countersign.dev/pull-request";

/// Annotation on objects the bot created: the `X-GitHub-Delivery` id that created them, so a
/// redelivery of the same event finds its object instead of creating another.
pub const CREATED_BY_DELIVERY_ANNOTATION: &str = "countersign.dev/created-by-delivery";
/// Annotation on AgentRuns started by a comment command: the comment's id.
pub const SOURCE_COMMENT_ANNOTATION: &str = "countersign.dev/source-comment";
/// Annotation the bot sets on a gate, run or Project to ask the controller to look again
/// now: the id of the delivery that changed something (ARCHITECTURE §3, step 2).
pub const LAST_DELIVERY_ANNOTATION: &str = "countersign.dev/last-delivery";
/// Annotation on ApprovalGates: the newest merge-queue commit GitHub asked checks for.
pub const MERGE_GROUP_SHA_ANNOTATION: &str = "countersign.dev/merge-group-sha";
/// Annotation on ApprovalGates: the comments on the pull request that someone other than
/// their author edited, comma-separated [`CommentRef`]s (`123` an issue comment, `rc:123` an
/// inline review comment, `rv:123` a review body). Commands in them never count (tampering).
pub const TAMPERED_COMMENTS_ANNOTATION: &str = "countersign.dev/tampered-comments";
/// Most entries [`TAMPERED_COMMENTS_ANNOTATION`] keeps (the oldest are dropped; commands in
/// comments edited after they were first evaluated stay uncounted anyway).
pub const MAX_TAMPERED_COMMENTS: usize = 1000;

/// Annotation on ApprovalGates: the head commit of the pull request when the bot received
/// each issue comment on it, as comma-separated `<comment id>=<sha>`. A comment command
/// counts for that head only; a comment the bot never received counts for none (GitHub
/// records no head for issue comments, and git dates can be forged).
pub const COMMAND_HEADS_ANNOTATION: &str = "countersign.dev/command-heads";
/// Most entries [`COMMAND_HEADS_ANNOTATION`] keeps (the lowest comment ids are dropped; the
/// gate's status keeps the head of every command it already recorded).
pub const MAX_COMMAND_HEADS: usize = 500;

/// Annotation on ApprovalGates: everyone who pushed to the pull request's branch, from the
/// senders of `pull_request` `synchronize` (and `opened`) deliveries, as comma-separated
/// `<user id>:<login>`. Pushers cannot approve, whatever name the commits carry.
pub const PUSHERS_ANNOTATION: &str = "countersign.dev/pushers";
/// Most entries [`PUSHERS_ANNOTATION`] keeps.
pub const MAX_PUSHERS: usize = 500;

/// Annotation on ApprovalGates: a digest of each review body with commands in it, as the bot
/// received it when the review was submitted, comma-separated `<review id>=<digest>`. GitHub
/// records no edit time for reviews, so commands in a review body count only while the body
/// is still what the bot received.
pub const REVIEW_BODIES_ANNOTATION: &str = "countersign.dev/review-bodies";
/// Most entries [`REVIEW_BODIES_ANNOTATION`] keeps (the lowest review ids are dropped).
pub const MAX_REVIEW_BODIES: usize = 200;

/// The review body digests recorded in [`REVIEW_BODIES_ANNOTATION`], by review id.
pub fn review_bodies(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<u64, String> {
    annotations
        .get(REVIEW_BODIES_ANNOTATION)
        .map(|v| {
            v.split(',')
                .filter_map(|entry| {
                    let (id, digest) = entry.trim().split_once('=')?;
                    let digest = digest.trim();
                    let hex = !digest.is_empty()
                        && digest.len() <= 64
                        && digest.bytes().all(|b| b.is_ascii_hexdigit());
                    Some((id.trim().parse().ok()?, digest.to_owned())).filter(|_| hex)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The [`REVIEW_BODIES_ANNOTATION`] value with review `id` recorded as `digest` (the first
/// receipt wins; at most [`MAX_REVIEW_BODIES`], lowest ids dropped).
pub fn review_bodies_value(
    annotations: &std::collections::BTreeMap<String, String>,
    id: u64,
    digest: &str,
) -> String {
    let mut bodies = review_bodies(annotations);
    bodies.entry(id).or_insert_with(|| digest.to_owned());
    while bodies.len() > MAX_REVIEW_BODIES {
        bodies.pop_first();
    }
    join(bodies.iter().map(|(id, d)| format!("{id}={d}")))
}

/// Annotation on ApprovalGates: the head commits whose push the bot received
/// (`pull_request` `opened`, `reopened` and `synchronize`), comma-separated, newest last. Once
/// the bot has seen any push of a pull request, a head it has not seen yet counts no
/// approval until its push event arrives: until then nobody knows who pushed it.
pub const PUSHED_HEADS_ANNOTATION: &str = "countersign.dev/pushed-heads";
/// Most entries [`PUSHED_HEADS_ANNOTATION`] keeps (the oldest are dropped).
pub const MAX_PUSHED_HEADS: usize = 100;

/// The heads listed in [`PUSHED_HEADS_ANNOTATION`].
pub fn pushed_heads(annotations: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(PUSHED_HEADS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| s.len() >= 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default()
}

/// The [`PUSHED_HEADS_ANNOTATION`] value with `sha` added; `None` when it is already there.
pub fn pushed_heads_value(
    annotations: &std::collections::BTreeMap<String, String>,
    sha: &str,
) -> Option<String> {
    let sha = sha.to_ascii_lowercase();
    let mut heads = pushed_heads(annotations);
    if heads.contains(&sha) {
        return None;
    }
    heads.push(sha);
    if heads.len() > MAX_PUSHED_HEADS {
        heads.drain(..heads.len() - MAX_PUSHED_HEADS);
    }
    Some(heads.join(","))
}

/// Which of GitHub's three comment id spaces an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommentKind {
    /// A comment in the pull request's conversation (`issue_comment`).
    Issue,
    /// An inline comment on a line of the diff (`pull_request_review_comment`).
    ReviewComment,
    /// The body of a review (`pull_request_review`).
    Review,
}

/// One comment, review comment or review body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommentRef {
    /// Which id space.
    pub kind: CommentKind,
    /// The id in it.
    pub id: u64,
}

impl CommentRef {
    /// An issue comment.
    pub fn issue(id: u64) -> Self {
        Self {
            kind: CommentKind::Issue,
            id,
        }
    }

    /// An inline review comment.
    pub fn review_comment(id: u64) -> Self {
        Self {
            kind: CommentKind::ReviewComment,
            id,
        }
    }

    /// A review body.
    pub fn review(id: u64) -> Self {
        Self {
            kind: CommentKind::Review,
            id,
        }
    }

    /// Parses `123`, `rc:123` or `rv:123`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (kind, id) = match text.split_once(':') {
            Some(("rc", id)) => (CommentKind::ReviewComment, id),
            Some(("rv", id)) => (CommentKind::Review, id),
            Some(_) => return None,
            None => (CommentKind::Issue, text),
        };
        Some(Self {
            kind,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for CommentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            CommentKind::Issue => write!(f, "{}", self.id),
            CommentKind::ReviewComment => write!(f, "rc:{}", self.id),
            CommentKind::Review => write!(f, "rv:{}", self.id),
        }
    }
}

/// The comments listed in an object's [`TAMPERED_COMMENTS_ANNOTATION`]; entries that do not
/// parse are skipped. Read by the controller, extended by the bot.
pub fn tampered_comments(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeSet<CommentRef> {
    annotations
        .get(TAMPERED_COMMENTS_ANNOTATION)
        .map(|v| v.split(',').filter_map(CommentRef::parse).collect())
        .unwrap_or_default()
}

/// The [`TAMPERED_COMMENTS_ANNOTATION`] value with `comment` added (sorted, at most
/// [`MAX_TAMPERED_COMMENTS`], the lowest ids of each kind dropped first).
pub fn tampered_value(
    annotations: &std::collections::BTreeMap<String, String>,
    comment: CommentRef,
) -> String {
    let mut refs = tampered_comments(annotations);
    refs.insert(comment);
    while refs.len() > MAX_TAMPERED_COMMENTS {
        let oldest = refs.iter().min_by_key(|r| r.id).copied();
        if let Some(oldest) = oldest {
            refs.remove(&oldest);
        }
    }
    join(refs.iter().map(ToString::to_string))
}

/// The head recorded for each issue comment in [`COMMAND_HEADS_ANNOTATION`]; malformed
/// entries are skipped.
pub fn command_heads(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<u64, String> {
    annotations
        .get(COMMAND_HEADS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .filter_map(|entry| {
                    let (id, sha) = entry.trim().split_once('=')?;
                    let sha = sha.trim();
                    let hex = sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
                    Some((id.trim().parse().ok()?, sha.to_ascii_lowercase())).filter(|_| hex)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The [`COMMAND_HEADS_ANNOTATION`] value with comment `id` recorded at `sha` (a comment
/// keeps the head of its first receipt; at most [`MAX_COMMAND_HEADS`], lowest ids dropped).
pub fn command_heads_value(
    annotations: &std::collections::BTreeMap<String, String>,
    id: u64,
    sha: &str,
) -> String {
    let mut heads = command_heads(annotations);
    heads.entry(id).or_insert_with(|| sha.to_ascii_lowercase());
    while heads.len() > MAX_COMMAND_HEADS {
        heads.pop_first();
    }
    join(heads.iter().map(|(id, sha)| format!("{id}={sha}")))
}

/// The pushers recorded in [`PUSHERS_ANNOTATION`]: (user id, login).
pub fn pushers(annotations: &std::collections::BTreeMap<String, String>) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for entry in annotations
        .get(PUSHERS_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
    {
        let Some((id, login)) = entry.trim().split_once(':') else {
            continue;
        };
        let (Ok(id), login) = (id.parse::<u64>(), login.trim()) else {
            continue;
        };
        let valid = !login.is_empty()
            && login.len() <= 39
            && login
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_[]".contains(&b));
        if valid && !out.iter().any(|(known, _)| *known == id) {
            out.push((id, login.to_owned()));
        }
    }
    out
}

/// The [`PUSHERS_ANNOTATION`] value with `(id, login)` added (at most [`MAX_PUSHERS`]; the
/// first pushers are kept); `None` when it is already there.
pub fn pushers_value(
    annotations: &std::collections::BTreeMap<String, String>,
    id: u64,
    login: &str,
) -> Option<String> {
    let mut all = pushers(annotations);
    if all.iter().any(|(known, _)| *known == id) || all.len() >= MAX_PUSHERS {
        return None;
    }
    all.push((id, login.to_owned()));
    Some(join(all.iter().map(|(id, login)| format!("{id}:{login}"))))
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}
/// Annotation on AgentRuns: the last steering command (`approve`, `reject`) someone with an
/// approver role gave on the run's issue, as `<command>/<delivery id>/<login>/<attempt>` —
/// how a plan in control mode is approved. `<attempt>` is the attempt whose plan was on the
/// issue when the bot received the command: a decision applies to that plan only. Read with
/// [`steering_command`].
pub const LAST_COMMAND_ANNOTATION: &str = "countersign.dev/last-command";

/// A plan decision read from [`LAST_COMMAND_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SteeringCommand {
    /// `approve` (true) or `reject` (false).
    pub approved: bool,
    /// The delivery that carried it.
    pub delivery: String,
    /// Who gave it, when recorded.
    pub by: Option<String>,
    /// The attempt whose plan the command answered, when recorded.
    pub plan_attempt: Option<u32>,
}

/// The steering command in an object's [`LAST_COMMAND_ANNOTATION`]; `None` when absent or
/// not an `approve`/`reject`.
pub fn steering_command(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<SteeringCommand> {
    let value = annotations.get(LAST_COMMAND_ANNOTATION)?;
    let mut parts = value.splitn(4, '/');
    let approved = match parts.next()? {
        "approve" => true,
        "reject" => false,
        _ => return None,
    };
    let delivery = parts.next().unwrap_or_default().to_owned();
    let by = parts.next().filter(|l| !l.is_empty()).map(str::to_owned);
    let plan_attempt = parts.next().and_then(|a| a.parse().ok());
    Some(SteeringCommand {
        approved,
        delivery,
        by,
        plan_attempt,
    })
}

/// The [`LAST_COMMAND_ANNOTATION`] value for `command` (`approve`/`reject`) answering the
/// plan of attempt `plan_attempt`.
pub fn steering_value(command: &str, delivery: &str, login: &str, plan_attempt: u32) -> String {
    format!("{command}/{delivery}/{login}/{plan_attempt}")
}

/// Annotation the bot sets on a run in guidance mode when someone answers its question:
/// `<attempt>/<delivery>/<login>/<answer>` (the attempt that asked; the answer is the rest).
pub const ANSWER_ANNOTATION: &str = "countersign.dev/answer";

/// An answer read from [`ANSWER_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerCommand {
    /// The attempt whose question it answers.
    pub attempt: u32,
    /// The delivery that carried it.
    pub delivery: String,
    /// Who answered.
    pub by: String,
    /// The answer.
    pub answer: String,
}

/// The answer in an object's [`ANSWER_ANNOTATION`]; `None` when absent or malformed.
pub fn answer_command(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<AnswerCommand> {
    let value = annotations.get(ANSWER_ANNOTATION)?;
    let mut parts = value.splitn(4, '/');
    let attempt = parts.next()?.parse().ok()?;
    let delivery = parts.next()?.to_owned();
    let by = parts.next().filter(|l| !l.is_empty())?.to_owned();
    let answer = parts
        .next()
        .map(str::trim)
        .filter(|a| !a.is_empty())?
        .to_owned();
    Some(AnswerCommand {
        attempt,
        delivery,
        by,
        answer,
    })
}

/// The [`ANSWER_ANNOTATION`] value for `answer` to the question of `attempt`.
pub fn answer_value(attempt: u32, delivery: &str, login: &str, answer: &str) -> String {
    format!("{attempt}/{delivery}/{login}/{answer}")
}

/// Field manager of every write the bot makes (one server-side-apply manager per writer).
pub const BOT_FIELD_MANAGER: &str = "countersign-bot";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn annotated(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(LAST_COMMAND_ANNOTATION.to_owned(), value.to_owned())])
    }

    #[test]
    fn answers_round_trip_and_junk_is_ignored() {
        let value = answer_value(2, "d-1", "rita", "410 / gone for good");
        let annotations = BTreeMap::from([(ANSWER_ANNOTATION.to_owned(), value)]);
        let answer = answer_command(&annotations).expect("parsed");
        assert_eq!(
            (
                answer.attempt,
                answer.delivery.as_str(),
                answer.by.as_str(),
                answer.answer.as_str()
            ),
            (2, "d-1", "rita", "410 / gone for good")
        );
        for junk in ["", "x/d/rita/410", "2/d//410", "2/d/rita/ ", "2/d/rita"] {
            let annotations = BTreeMap::from([(ANSWER_ANNOTATION.to_owned(), junk.to_owned())]);
            assert!(answer_command(&annotations).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn steering_commands_round_trip_and_junk_is_ignored() {
        let value = steering_value("approve", "d-1", "tess", 2);
        assert_eq!(
            steering_command(&annotated(&value)),
            Some(SteeringCommand {
                approved: true,
                delivery: "d-1".into(),
                by: Some("tess".into()),
                plan_attempt: Some(2),
            })
        );
        // The older two-part form (no login, no attempt) still reads.
        assert_eq!(
            steering_command(&annotated("reject/d-2")),
            Some(SteeringCommand {
                approved: false,
                delivery: "d-2".into(),
                by: None,
                plan_attempt: None,
            })
        );
        assert_eq!(steering_command(&annotated("hold/d-3/x")), None);
        assert_eq!(steering_command(&annotated("")), None);
        assert_eq!(steering_command(&BTreeMap::new()), None);
    }

    #[test]
    fn tampered_comments_keep_their_kind_and_read_the_old_form() {
        let mut a = BTreeMap::from([(
            TAMPERED_COMMENTS_ANNOTATION.to_owned(),
            "12, x, rc:7,zz:1".to_owned(),
        )]);
        let value = tampered_value(&a, CommentRef::review(9));
        a.insert(TAMPERED_COMMENTS_ANNOTATION.to_owned(), value);
        let refs = tampered_comments(&a);
        assert!(refs.contains(&CommentRef::issue(12)));
        assert!(refs.contains(&CommentRef::review_comment(7)));
        assert!(refs.contains(&CommentRef::review(9)));
        assert!(!refs.contains(&CommentRef::issue(7)), "id spaces differ");
        assert_eq!(refs.len(), 3);
    }

    #[test]
    fn command_heads_keep_the_first_receipt_and_skip_junk() {
        let sha = "a".repeat(40);
        let other = "b".repeat(40);
        let mut a = BTreeMap::new();
        let v = command_heads_value(&a, 5, &sha);
        a.insert(COMMAND_HEADS_ANNOTATION.to_owned(), format!("{v},x=y,7=zz"));
        let v = command_heads_value(&a, 5, &other);
        a.insert(COMMAND_HEADS_ANNOTATION.to_owned(), v);
        assert_eq!(command_heads(&a), BTreeMap::from([(5, sha)]));
    }

    #[test]
    fn pushers_are_unique_and_junk_is_skipped() {
        let mut a = BTreeMap::new();
        let v = pushers_value(&a, 2, "carol").expect("new");
        a.insert(
            PUSHERS_ANNOTATION.to_owned(),
            format!("{v},x:y,3:bad login,4:"),
        );
        assert_eq!(pushers_value(&a, 2, "carol"), None);
        let v = pushers_value(&a, 9, "erin").expect("new");
        a.insert(PUSHERS_ANNOTATION.to_owned(), v);
        assert_eq!(
            pushers(&a),
            vec![(2, "carol".to_owned()), (9, "erin".to_owned())]
        );
    }
}
