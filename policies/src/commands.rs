//! Comment commands (`/approve`, `/countersign run backend …`): turns the untrusted Markdown of an
//! issue or pull-request comment into typed [`Command`]s. Pure and IO-free; the handlers decide who
//! may run what. Commands are only recognised in paragraph text at the start of a line, never in
//! code, quotes, HTML, links, headings or tables.

mod markdown;
#[cfg(test)]
mod tests;

use std::fmt;

/// Commands run from one comment at most; the rest are ignored (a wall of commands is
/// abuse, not intent).
pub const MAX_COMMANDS_PER_COMMENT: usize = 10;

/// Longest `/countersign run` (or `plan`) instructions kept, in bytes (the AgentRun `task.instructions` limit).
pub const MAX_INSTRUCTIONS_BYTES: usize = 8 * 1024;
/// Longest `/countersign answer` kept, in bytes.
pub const MAX_ANSWER_BYTES: usize = 400;
/// Longest `/reject` reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest Kubernetes object name accepted as an agent name.
const MAX_AGENT_NAME_LEN: usize = 63;

/// A valid Kubernetes object name (DNS-1123 label) naming an Agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// Validates `name` as a DNS-1123 label: lower-case alphanumerics and `-`, starting and
    /// ending with an alphanumeric, at most 63 characters.
    pub fn parse(name: &str) -> Result<Self, CommandProblem> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let valid = !name.is_empty()
            && name.len() <= MAX_AGENT_NAME_LEN
            && name.chars().all(|c| ok_char(c) || c == '-')
            && name.chars().next().is_some_and(ok_char)
            && name.chars().last().is_some_and(ok_char);
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(CommandProblem::InvalidAgentName(
                name.chars().take(80).collect(),
            ))
        }
    }

    /// The name as written in the Agent's `metadata.name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command Countersign understands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `/countersign run <agent> [instructions]`: start an AgentRun; `/countersign plan
    /// <agent> [instructions]`: start one that proposes a breakdown into sub-tasks.
    Run {
        /// The Agent to run.
        agent: AgentName,
        /// Extra instructions for the agent, if any.
        instructions: Option<String>,
        /// `plan`: the run proposes a breakdown for approval instead of a change.
        breakdown: bool,
    },
    /// `/approve`: approve the pull request at its current head.
    Approve,
    /// `/reject [reason]`: reject the pull request.
    Reject {
        /// Why, if given.
        reason: Option<String>,
    },
    /// `/hold`: block merging until `/unhold`.
    Hold,
    /// `/unhold`: lift an earlier `/hold`.
    Unhold,
    /// `/retry`: retry the last failed run.
    Retry,
    /// `/cancel`: cancel the running run.
    Cancel,
    /// `/risk`: explain the pull request's risk score.
    Risk,
    /// `/help`: list the commands.
    Help,
    /// `/countersign answer <text>`: answer the question a run in guidance mode asked.
    Answer {
        /// The answer.
        text: String,
    },
}

/// What a command is for; decides which permission check applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Starts or stops agent work (run, retry, cancel): needs write permission and trigger rules.
    Trigger,
    /// Decides about a pull request (approve, reject, hold, unhold): needs an approver role.
    Approval,
    /// Only reports (risk, help).
    Info,
}

impl Command {
    /// The command word, as used in `/countersign <name>`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Run {
                breakdown: false, ..
            } => "run",
            Self::Run {
                breakdown: true, ..
            } => "plan",
            Self::Approve => "approve",
            Self::Reject { .. } => "reject",
            Self::Hold => "hold",
            Self::Unhold => "unhold",
            Self::Retry => "retry",
            Self::Cancel => "cancel",
            Self::Risk => "risk",
            Self::Help => "help",
            Self::Answer { .. } => "answer",
        }
    }

    /// Which kind of permission the command needs.
    pub fn kind(&self) -> CommandKind {
        match self {
            Self::Run { .. } | Self::Retry | Self::Cancel | Self::Answer { .. } => {
                CommandKind::Trigger
            }
            Self::Approve | Self::Reject { .. } | Self::Hold | Self::Unhold => {
                CommandKind::Approval
            }
            Self::Risk | Self::Help => CommandKind::Info,
        }
    }
}

/// Why a `/countersign …` line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CommandProblem {
    /// `/countersign` with no command word.
    #[error("`/countersign` needs a command; try `/countersign help`")]
    MissingCommand,
    /// `/countersign <word>` with a word we do not know.
    #[error("unknown command `{0}`; try `/countersign help`")]
    UnknownCommand(String),
    /// `/countersign run` or `/countersign plan` without an agent.
    #[error(
        "`run` and `plan` need an agent name: `/countersign run <agent> [instructions]`, \
         `/countersign plan <agent> [instructions]`"
    )]
    MissingAgent,
    /// `/countersign answer` without an answer.
    #[error("`answer` needs the answer: `/countersign answer <option>`")]
    MissingAnswer,
    /// The agent is not a valid Kubernetes object name.
    #[error("`{0}` is not a valid agent name (lower-case letters, digits and `-`, at most 63)")]
    InvalidAgentName(String),
}

/// One command line of a comment: a command, or a `/countersign …` line we could not parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// A valid command.
    Command(Command),
    /// A `/countersign …` line that is not a valid command (answer with help).
    Invalid {
        /// The offending line, trimmed.
        text: String,
        /// What is wrong with it.
        problem: CommandProblem,
    },
}

/// Every command in a comment body, in order. Other bots' slash commands are ignored.
pub fn parse_comment(markdown: &str) -> Vec<Parsed> {
    let mut out = Vec::new();
    for block in markdown::command_blocks(markdown) {
        let lines: Vec<&str> = block.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            i += 1;
            let Some(rest) = line.strip_prefix('/') else {
                continue;
            };
            let (word, args) = split_word(rest);
            let namespaced = word.eq_ignore_ascii_case("countersign");
            let (word, args) = if namespaced {
                split_word(args)
            } else {
                (word, args)
            };
            let word = word.to_ascii_lowercase();
            let parsed = match word.as_str() {
                "run" | "plan" if namespaced => {
                    // Instructions continue on following non-command lines of the block.
                    let mut extra = vec![];
                    while i < lines.len() && !lines[i].trim_start().starts_with('/') {
                        extra.push(lines[i]);
                        i += 1;
                    }
                    Some(parse_run(line, args, &extra, word == "plan"))
                }
                "answer" if namespaced => Some(match capped(args.trim(), MAX_ANSWER_BYTES) {
                    Some(text) => Parsed::Command(Command::Answer { text }),
                    None => invalid(line, CommandProblem::MissingAnswer),
                }),
                "approve" => Some(Parsed::Command(Command::Approve)),
                "reject" => Some(Parsed::Command(Command::Reject {
                    reason: capped(args.trim(), MAX_REASON_BYTES),
                })),
                "hold" => Some(Parsed::Command(Command::Hold)),
                "unhold" => Some(Parsed::Command(Command::Unhold)),
                "retry" => Some(Parsed::Command(Command::Retry)),
                "cancel" => Some(Parsed::Command(Command::Cancel)),
                "risk" => Some(Parsed::Command(Command::Risk)),
                "help" => Some(Parsed::Command(Command::Help)),
                "" if namespaced => Some(invalid(line, CommandProblem::MissingCommand)),
                _ if namespaced => Some(invalid(line, CommandProblem::UnknownCommand(word))),
                _ => None,
            };
            out.extend(parsed);
        }
    }
    out
}

/// The commands in `current` that were not in `previous`, as a multiset, in `current`'s order.
///
/// `previous == None` (GitHub sent no `changes.body.from`) returns nothing: we cannot tell which
/// commands are new, and an edit must never re-run an old command (a re-sent `/approve` on a newer
/// head, or a `run` started twice, would be worse than a command that needs re-posting).
pub fn new_commands(previous: Option<&str>, current: &str) -> Vec<Parsed> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let mut old = parse_comment(previous);
    let mut out = Vec::new();
    for parsed in parse_comment(current) {
        if let Some(pos) = old.iter().position(|o| *o == parsed) {
            old.swap_remove(pos);
        } else {
            out.push(parsed);
        }
    }
    out
}

/// The Markdown the bot replies with to `/help`, listing `agents` available on this repository.
pub fn help_text(agents: &[&str]) -> String {
    let mut s = String::from(
        "### Countersign commands\n\n\
         Every command also works as `/countersign <command>` to avoid clashing with other bots. \
         Commands must start a line; they are ignored in code, quotes and HTML.\n\n\
         **Agent runs** (need write permission and the Project's trigger rules):\n\
         - `/countersign run <agent> [instructions]`: start an agent on this issue; \
         instructions may continue on the following lines.\n\
         - `/countersign plan <agent> [instructions]`: have an agent propose a breakdown into \
         sub-tasks for other agents; `/approve` it here to start them.\n\
         - `/retry`: retry the last failed run.\n\
         - `/cancel`: cancel the running run.\n\
         - `/countersign answer <option>`: answer the question of a run in guidance mode.\n\n\
         **Approvals** (need an approver role required by the pull request's risk level):\n\
         - `/approve`: approve the current head commit.\n\
         - `/reject [reason]`: reject the pull request.\n\
         - `/hold`: block merging until `/unhold`.\n\
         - `/unhold`: lift a hold.\n\n\
         **Information** (anyone):\n\
         - `/risk`: explain the risk score and required approvals.\n\
         - `/help`: show this message.\n\n",
    );
    if agents.is_empty() {
        s.push_str("No agents are available on this repository.\n");
    } else {
        s.push_str("**Agents available on this repository:** ");
        let names: Vec<String> = agents.iter().map(|a| format!("`{a}`")).collect();
        s.push_str(&names.join(", "));
        s.push('\n');
    }
    s
}

fn parse_run(line: &str, args: &str, extra: &[&str], breakdown: bool) -> Parsed {
    let (agent, rest) = split_word(args);
    if agent.is_empty() {
        return invalid(line, CommandProblem::MissingAgent);
    }
    match AgentName::parse(agent) {
        Err(problem) => invalid(line, problem),
        Ok(agent) => {
            let mut text = rest.trim().to_owned();
            for l in extra {
                text.push('\n');
                text.push_str(l);
            }
            Parsed::Command(Command::Run {
                agent,
                instructions: capped(text.trim(), MAX_INSTRUCTIONS_BYTES),
                breakdown,
            })
        }
    }
}

fn invalid(line: &str, problem: CommandProblem) -> Parsed {
    Parsed::Invalid {
        text: line.trim().to_owned(),
        problem,
    }
}

/// Splits off the first whitespace-separated word.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// `None` for empty text, otherwise the text cut to `max` bytes on a char boundary.
fn capped(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].trim_end().to_owned())
}
