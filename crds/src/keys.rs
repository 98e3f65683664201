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
/// Annotation on ApprovalGates: ids (comma-separated) of comments on the pull request that
/// someone other than their author edited. Commands in them never count (tampering).
pub const TAMPERED_COMMENTS_ANNOTATION: &str = "countersign.dev/tampered-comments";
/// Most comment ids [`TAMPERED_COMMENTS_ANNOTATION`] keeps (the oldest are dropped).
pub const MAX_TAMPERED_COMMENTS: usize = 100;

/// The comment ids listed in an object's [`TAMPERED_COMMENTS_ANNOTATION`]; entries that are
/// not numbers are skipped. Read by the controller, extended by the bot.
pub fn tampered_comment_ids(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeSet<u64> {
    annotations
        .get(TAMPERED_COMMENTS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .filter_map(|id| id.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
/// Annotation on AgentRuns: the last steering command (`approve`, `reject`) someone with an
/// approver role gave on the run's issue, as `<command>/<delivery id>/<login>` — how a
/// plan in control mode is approved. Read with [`steering_command`].
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
}

/// The steering command in an object's [`LAST_COMMAND_ANNOTATION`]; `None` when absent or
/// not an `approve`/`reject`.
pub fn steering_command(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<SteeringCommand> {
    let value = annotations.get(LAST_COMMAND_ANNOTATION)?;
    let mut parts = value.splitn(3, '/');
    let approved = match parts.next()? {
        "approve" => true,
        "reject" => false,
        _ => return None,
    };
    let delivery = parts.next().unwrap_or_default().to_owned();
    let by = parts.next().filter(|l| !l.is_empty()).map(str::to_owned);
    Some(SteeringCommand {
        approved,
        delivery,
        by,
    })
}

/// The [`LAST_COMMAND_ANNOTATION`] value for `command` (`approve`/`reject`).
pub fn steering_value(command: &str, delivery: &str, login: &str) -> String {
    format!("{command}/{delivery}/{login}")
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
    fn steering_commands_round_trip_and_junk_is_ignored() {
        let value = steering_value("approve", "d-1", "tess");
        assert_eq!(
            steering_command(&annotated(&value)),
            Some(SteeringCommand {
                approved: true,
                delivery: "d-1".into(),
                by: Some("tess".into()),
            })
        );
        // The older two-part form (no login) still reads.
        assert_eq!(
            steering_command(&annotated("reject/d-2")),
            Some(SteeringCommand {
                approved: false,
                delivery: "d-2".into(),
                by: None,
            })
        );
        assert_eq!(steering_command(&annotated("hold/d-3/x")), None);
        assert_eq!(steering_command(&annotated("")), None);
        assert_eq!(steering_command(&BTreeMap::new()), None);
    }
}
