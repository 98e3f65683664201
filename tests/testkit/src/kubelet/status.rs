//! The pod status the local kubelet reports, decided from what it knows about each container
//! (pure: no IO). Phases follow the kubelet's rules for `restartPolicy: Never`: Pending while
//! volumes are set up and init containers run; Failed as soon as an init container fails;
//! Running once the containers started; Succeeded when all exited 0, Failed when any did not.

use serde_json::{Value, json};

/// How one container ended (or could not start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Exit {
    pub(super) code: i32,
    /// `Completed`, `Error`, `StartError`, `CreateContainerConfigError`.
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) started_at: String,
    pub(super) finished_at: String,
}

/// What the kubelet knows about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not started; the reason (`ContainerCreating`, `PodInitializing`).
    Waiting(&'static str),
    Running {
        started_at: String,
    },
    Terminated(Exit),
}

impl State {
    fn json(&self) -> Value {
        match self {
            State::Waiting(reason) => json!({"waiting": {"reason": reason}}),
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(exit) => json!({"terminated": {
                "exitCode": exit.code, "reason": exit.reason, "message": exit.message,
                "startedAt": exit.started_at, "finishedAt": exit.finished_at,
            }}),
        }
    }

    fn succeeded(&self) -> bool {
        matches!(self, State::Terminated(exit) if exit.code == 0)
    }

    fn failed(&self) -> bool {
        matches!(self, State::Terminated(exit) if exit.code != 0)
    }
}

/// A pod's containers and their states, in spec order.
#[derive(Clone, Debug)]
pub(super) struct PodProgress {
    /// (name, image, state) of each init container.
    pub(super) init: Vec<(String, String, State)>,
    /// (name, image, state) of each container.
    pub(super) main: Vec<(String, String, State)>,
    pub(super) start_time: String,
    /// A pod-level reason and message that ends the pod (`DeadlineExceeded`).
    pub(super) ended: Option<(&'static str, &'static str)>,
}

/// The phase for a pod in `progress`.
pub(super) fn phase(progress: &PodProgress) -> &'static str {
    let init_failed = progress.init.iter().any(|(_, _, s)| s.failed());
    let initialized = progress.init.iter().all(|(_, _, s)| s.succeeded());
    let main = || progress.main.iter().map(|(_, _, s)| s);
    if progress.ended.is_some() || init_failed {
        "Failed"
    } else if !initialized || main().any(|s| matches!(s, State::Waiting(_))) {
        "Pending"
    } else if main().all(State::succeeded) {
        "Succeeded"
    } else if main().all(|s| matches!(s, State::Terminated(_))) {
        "Failed"
    } else {
        "Running"
    }
}

/// The status subresource's content for `progress`, written whole on every change.
pub(super) fn pod_status(progress: &PodProgress, now: &str) -> Value {
    let phase = phase(progress);
    let initialized = progress.init.iter().all(|(_, _, s)| s.succeeded());
    let all_running = progress
        .main
        .iter()
        .all(|(_, _, s)| matches!(s, State::Running { .. }));
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let condition = |kind: &str, ok: bool, reason: &str| {
        let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" },
                           "lastTransitionTime": now});
        if !ok {
            c["reason"] = json!(reason);
        }
        c
    };
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let ready = all_running && !terminal && progress.ended.is_none();
    let statuses = |list: &[(String, String, State)]| -> Vec<Value> {
        list.iter()
            .map(|(name, image, state)| {
                let running = matches!(state, State::Running { .. });
                json!({"name": name, "image": image, "imageID": "", "restartCount": 0,
                       "ready": running, "started": running, "state": state.json()})
            })
            .collect()
    };
    let mut status = json!({
        "phase": phase,
        "startTime": progress.start_time,
        "conditions": [
            condition(
                "Initialized",
                initialized,
                if terminal { "PodCompleted" } else { "ContainersNotInitialized" },
            ),
            condition("ContainersReady", ready, ready_reason),
            condition("Ready", ready, ready_reason),
        ],
        "containerStatuses": statuses(&progress.main),
    });
    if !progress.init.is_empty() {
        status["initContainerStatuses"] = json!(statuses(&progress.init));
    }
    if let Some((reason, message)) = progress.ended {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> State {
        State::Terminated(Exit {
            code,
            reason: if code == 0 { "Completed" } else { "Error" },
            message: String::new(),
            started_at: "t".into(),
            finished_at: "t".into(),
        })
    }

    fn progress(init: Vec<State>, main: Vec<State>) -> PodProgress {
        let named = |prefix: &str, states: Vec<State>| {
            states
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("{prefix}{i}"), String::new(), s))
                .collect()
        };
        PodProgress {
            init: named("init", init),
            main: named("main", main),
            start_time: "t".into(),
            ended: None,
        }
    }

    #[test]
    fn phases_follow_init_containers_then_containers() {
        let running = State::Running {
            started_at: "t".into(),
        };
        let waiting = State::Waiting("PodInitializing");
        assert_eq!(
            phase(&progress(vec![running.clone()], vec![waiting.clone()])),
            "Pending"
        );
        assert_eq!(
            phase(&progress(vec![exit(0), exit(2)], vec![waiting.clone()])),
            "Failed"
        );
        assert_eq!(
            phase(&progress(vec![exit(0)], vec![running.clone()])),
            "Running"
        );
        assert_eq!(
            phase(&progress(vec![exit(0)], vec![exit(0), running])),
            "Running"
        );
        assert_eq!(
            phase(&progress(vec![], vec![exit(0), exit(0)])),
            "Succeeded"
        );
        assert_eq!(phase(&progress(vec![], vec![exit(0), exit(1)])), "Failed");
        let mut ended = progress(vec![], vec![waiting]);
        ended.ended = Some(("DeadlineExceeded", "late"));
        assert_eq!(phase(&ended), "Failed");
    }

    #[test]
    fn init_container_statuses_appear_only_with_init_containers() {
        let status = pod_status(&progress(vec![], vec![exit(0)]), "now");
        assert!(status.get("initContainerStatuses").is_none());
        let status = pod_status(&progress(vec![exit(0)], vec![exit(0)]), "now");
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(status["conditions"][0]["status"], "True");
    }
}
