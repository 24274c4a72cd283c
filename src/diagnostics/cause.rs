//! What the evidence says caused an outage, where it says so plainly: a server that "did not respond in
//! 30 seconds" because its home is full shows `[Errno 28] No space left on device` only in its own log. The
//! signatures are the outages that really happen (see the notes on incidents in the field), most specific
//! first; the first one found names the cause, quotes the line, and says where it was seen.

use super::{Diagnostics, Section, autoscaler};

/// A cause and the words that give it away (any of them, case-sensitive as the systems print them).
const SIGNATURES: &[(&str, &[&str])] = &[
    (
        // KubeSpawner halts the hub when a watch dies ("Events reflector failed, halting Hub."); until it is
        // restarted every start waits for news that never comes.
        "the hub's spawner stopped watching Kubernetes (its reflector failed)",
        &["reflector failed, halting Hub", "Reflector failed", "reflector failed"],
    ),
    ("a home directory (or another volume) is full", &["No space left on device", "[Errno 28]", "ENOSPC"]),
    ("a disk quota is exceeded", &["Disk quota exceeded", "[Errno 122]", "EDQUOT"]),
    ("a home directory (or another volume) is read-only", &["Read-only file system", "[Errno 30]", "EROFS"]),
    ("a volume cannot be mounted", &["FailedMount", "MountVolume.SetUp failed", "Unable to attach or mount"]),
    ("a container ran out of memory", &["OOMKilled"]),
    ("an image cannot be pulled", &["ErrImagePull", "ImagePullBackOff", "Failed to pull image"]),
];

/// Pods that fit no node, as the scheduler and the autoscaler's events say; after the autoscaler's own status,
/// which says why no node is added.
const NO_ROOM: (&str, &[&str]) = (
    "no node has room for the pods, and none is being added",
    &[
        "Insufficient memory",
        "Insufficient cpu",
        "Insufficient nvidia.com/gpu",
        "didn't trigger scale-up",
        "max node group size reached",
        "didn't match Pod's node affinity/selector",
        "had untolerated taint",
    ],
);

/// How much of the line that gave the cause away is quoted.
const QUOTED: usize = 160;

/// The likely cause, e.g. "a home directory (or another volume) is full: `[pod/jupyter-probe-1/notebook]
/// OSError: [Errno 28] No space left on device` (in `kubectl -n temple logs -l component=singleuser-server
/// --tail=50 --prefix`)"; `None` when no signature is found.
pub fn likely_cause(diagnostics: &Diagnostics) -> Option<String> {
    let sections = &diagnostics.sections;
    let signed = |(cause, words): &(&str, &[&str])| {
        sections.iter().find_map(|section| found_in(section, words).map(|line| describe(cause, line, section)))
    };
    let first = |cause: &str, evidence: fn(&Section) -> Option<String>| {
        sections.iter().find_map(|section| evidence(section).map(|line| describe(cause, &line, section)))
    };
    SIGNATURES
        .iter()
        .find_map(signed)
        .or_else(|| first("the cluster autoscaler cannot add nodes", autoscaler::blocked))
        .or_else(|| signed(&NO_ROOM))
        .or_else(|| first("an image is still being pulled", |s| pull_still_running(s).map(String::from)))
}

/// In an events listing (`LAST SEEN TYPE REASON OBJECT MESSAGE`, oldest first), the last `Pulling` of an
/// object that no `Pulled` followed: a start waiting on a large image or a slow registry. Only a cause when
/// nothing more specific is found, since every fresh node pulls.
fn pull_still_running(section: &Section) -> Option<&str> {
    let text = section.output.as_ref().ok()?;
    let mut pulling: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        match columns.as_slice() {
            [_, _, "Pulling", object, ..] => pulling.push((object, line)),
            [_, _, "Pulled", object, ..] => pulling.retain(|(pulled, _)| pulled != object),
            _ => {}
        }
    }
    pulling.last().map(|(_, line)| *line)
}

fn found_in<'s>(section: &'s Section, words: &[&str]) -> Option<&'s str> {
    let text = section.output.as_ref().ok()?;
    text.lines().find(|line| words.iter().any(|word| line.contains(word)))
}

fn describe(cause: &str, line: &str, section: &Section) -> String {
    let quoted = crate::domain::wording::truncate(&line.split_whitespace().collect::<Vec<_>>().join(" "), QUOTED);
    format!("{cause}: `{}` (in `{}`)", quoted.replace('`', "'"), section.command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Keep;
    use std::time::UNIX_EPOCH;

    fn diagnostics(sections: Vec<Section>) -> Diagnostics {
        Diagnostics { collected_at: UNIX_EPOCH, sections }
    }

    #[test]
    fn a_full_home_in_a_users_log_is_named_over_everything_else() {
        let found = likely_cause(&diagnostics(vec![
            Section::ok(
                "kubectl -n temple get events",
                "Warning FailedScheduling 0/3 nodes: Insufficient memory\n".into(),
                Keep::Head,
            ),
            Section::ok(
                "kubectl -n temple logs -l component=singleuser-server --tail=50 --prefix",
                "[pod/jupyter-probe-1/notebook] [I 10:00 ServerApp] starting\n\
                 [pod/jupyter-probe-1/notebook] OSError: [Errno 28] No space left on device: '/home/jovyan/.local'\n"
                    .into(),
                Keep::Tail,
            ),
        ]))
        .unwrap();
        assert_eq!(
            found,
            "a home directory (or another volume) is full: `[pod/jupyter-probe-1/notebook] OSError: [Errno 28] No space \
             left on device: '/home/jovyan/.local'` (in `kubectl -n temple logs -l component=singleuser-server --tail=50 --prefix`)"
        );
    }

    #[test]
    fn a_halted_spawner_and_a_pull_that_never_ended_are_named() {
        let hub_log = Section::ok(
            "kubectl -n temple logs -l component=hub --tail=200",
            "[E 2026-12-06 03:01:02.000 JupyterHub reflector:385] Events reflector failed, halting Hub.\n".into(),
            Keep::Tail,
        );
        let halted = likely_cause(&diagnostics(vec![hub_log])).unwrap();
        assert!(
            halted.starts_with("the hub's spawner stopped watching Kubernetes (its reflector failed): `[E"),
            "{halted}"
        );
        let events = |lines: &str| {
            Section::ok("kubectl -n temple get events --sort-by=.lastTimestamp", lines.into(), Keep::Tail)
        };
        let still = events(
            "LAST SEEN   TYPE     REASON    OBJECT                MESSAGE\n\
             5m          Normal   Pulling   pod/jupyter-probe-1   Pulling image \"big:1\"\n\
             4m          Normal   Pulling   pod/jupyter-alice     Pulling image \"big:1\"\n\
             1m          Normal   Pulled    pod/jupyter-alice     Successfully pulled image \"big:1\"\n",
        );
        let pulling = likely_cause(&diagnostics(vec![still])).unwrap();
        assert!(
            pulling.starts_with("an image is still being pulled: `5m Normal Pulling pod/jupyter-probe-1"),
            "{pulling}"
        );
        let done = events(
            "5m   Normal   Pulling   pod/jupyter-probe-1   Pulling image \"big:1\"\n\
             1m   Normal   Pulled    pod/jupyter-probe-1   Successfully pulled image \"big:1\"\n",
        );
        assert_eq!(likely_cause(&diagnostics(vec![done])), None);
    }

    #[test]
    fn nothing_recognisable_names_no_cause_and_failed_sections_are_not_read() {
        assert_eq!(
            likely_cause(&diagnostics(vec![Section::ok("kubectl get pods", "all fine\n".into(), Keep::Head)])),
            None
        );
        let failed = Section::failed("kubectl get events", "OOMKilled appears only in this error text");
        assert_eq!(likely_cause(&diagnostics(vec![failed])), None);
    }
}
