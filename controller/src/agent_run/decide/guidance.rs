//! Guidance mode: a question an attempt asked (checked here, never trusted from the pod)
//! waits on the issue for `/countersign answer …` from someone allowed to steer, or for its
//! deadline, after which the run goes on with the question's default. The next attempt gets
//! the answers in its prompt. Part of the pure [`super::decide`].

use countersign_crds::agent_run::{AskedQuestion, Attempt};
use countersign_crds::guidance::{
    AnsweredQuestion, DEFAULT_ANSWER_TIMEOUT, MAX_QUESTIONS, Question,
};
use countersign_crds::keys::answer_command;
use countersign_crds::{AgentRun, AgentRunStatus, RunMode, RunPhase};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Admission, Decision, Inputs, PodView, start_attempt, until};

/// Checks the question attempt `number` asked, for a run allowed to ask one more.
pub(super) fn check(
    i: &Inputs<'_>,
    status: &AgentRunStatus,
    report: &str,
) -> Result<Question, String> {
    if super::run_mode(i.run, i.agent) != RunMode::Guidance {
        return Err("only runs in guidance mode may ask questions".into());
    }
    if status.questions.len() >= MAX_QUESTIONS {
        return Err(format!("a run may ask at most {MAX_QUESTIONS} questions"));
    }
    Question::parse(report)
}

/// Records the question attempt `number` asked, with its deadline.
pub(super) fn record(i: &Inputs<'_>, d: &mut Decision, number: u32, question: Question) {
    let timeout = i
        .agent
        .and_then(|a| a.spec.limits.answer_timeout)
        .map_or(DEFAULT_ANSWER_TIMEOUT, |t| t.0);
    let deadline = i
        .now
        .saturating_add(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    d.status.questions.push(AskedQuestion {
        attempt: number,
        question: question.question,
        options: question.options,
        default: question.default,
        deadline: Time(deadline),
        answer: None,
        answered_by: None,
        answer_time: None,
    });
}

/// Whether attempt `last` asked the run's last question.
pub(super) fn asked_by(status: &AgentRunStatus, last: &Attempt) -> bool {
    status
        .questions
        .last()
        .is_some_and(|q| q.attempt == last.number)
}

/// Records the answer when there is one (a person's, or the default once the deadline
/// passed); `true` when the question is answered.
fn answer(run: &AgentRun, question: &mut AskedQuestion, now: Timestamp) -> bool {
    if question.answer.is_some() {
        return true;
    }
    if let Some(given) = answer_command(run.annotations()).filter(|a| a.attempt == question.attempt)
    {
        question.answer = Some(super::truncate(&given.answer, 1024));
        question.answered_by = Some(given.by);
        question.answer_time = Some(Time(now));
        return true;
    }
    if now >= question.deadline.0 {
        question.answer = Some(question.default.clone());
        question.answer_time = Some(Time(now));
        return true;
    }
    false
}

/// A question waits for its answer; once answered, the next attempt goes through admission.
pub(super) fn follow(i: &Inputs<'_>, d: &mut Decision, last: &Attempt) {
    let Some(mut question) = d.status.questions.last().cloned() else {
        return;
    };
    if !answer(i.run, &mut question, i.now) {
        d.status.phase = RunPhase::AwaitingAnswer;
        d.status.message = Some(format!(
            "Asked a question on the issue; answer with /countersign answer <option> before {} \
             or the run goes on with {:?}",
            question.deadline.0, question.default
        ));
        d.requeue = Some(
            until(i.now, question.deadline.0)
                .min(
                    i.settings
                        .wait_requeue
                        .max(std::time::Duration::from_secs(1)),
                )
                .max(std::time::Duration::from_millis(100)),
        );
        return;
    }
    let how = match &question.answered_by {
        Some(by) => format!(
            "@{by} answered {:?}",
            question.answer.clone().unwrap_or_default()
        ),
        None => format!(
            "nobody answered in time; going on with {:?}",
            question.default
        ),
    };
    if let Some(slot) = d.status.questions.last_mut() {
        *slot = question;
    }
    match &i.admission {
        Some(Admission::Admit) => {
            let provider = super::stages::provider_index(i, &last.provider);
            start_attempt(i, d, last.number + 1, provider);
        }
        Some(Admission::Wait(why)) => {
            d.status.phase = RunPhase::Queued;
            d.status.message = Some(format!("{how}; {why}"));
            d.requeue = Some(i.settings.wait_requeue);
        }
        None => {
            d.status.message = Some(how);
            d.requeue = Some(i.settings.wait_requeue);
        }
    }
}

/// Whether the run's last question is answered (recorded, by an answer not yet recorded, or
/// by its deadline) and no attempt after it exists: the next attempt needs admission.
pub(crate) fn answered_question_waits(run: &AgentRun, pods: &[PodView], now: Timestamp) -> bool {
    let Some(status) = run.status.as_ref() else {
        return false;
    };
    let Some(question) = status.questions.last() else {
        return false;
    };
    if status.phase.is_finished() || run.spec.cancel_requested {
        return false;
    }
    answer(run, &mut question.clone(), now)
        && super::stages::nothing_after(status, pods, question.attempt)
}

/// The attempt after which the current stage started: the last answered question's.
pub(super) fn stage_start(status: &AgentRunStatus) -> u32 {
    status
        .questions
        .iter()
        .filter(|q| q.answer.is_some())
        .map(|q| q.attempt)
        .max()
        .unwrap_or(0)
}

/// What the next attempt is told: every answered question, and whether it may ask again.
pub fn for_task(status: &AgentRunStatus, mode: RunMode) -> (Vec<AnsweredQuestion>, bool) {
    let answers = status
        .questions
        .iter()
        .filter_map(|q| {
            Some(AnsweredQuestion {
                question: q.question.clone(),
                answer: q.answer.clone()?,
                defaulted: q.answered_by.is_none(),
            })
        })
        .collect();
    let may_ask = mode == RunMode::Guidance && status.questions.len() < MAX_QUESTIONS;
    (answers, may_ask)
}
