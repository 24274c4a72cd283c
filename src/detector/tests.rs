use super::*;
use crate::domain::{FailureCause, Slowness, StepFailure};
use proptest::prelude::*;

const MIN: Duration = Duration::from_secs(60);

fn settings() -> DetectorSettings {
    DetectorSettings { min_affected_users: 2, window: 15 * MIN, recovery_successes: 2, keep_open_for: Duration::ZERO }
}

fn seconds(s: u64) -> SystemTime {
    t(0) + Duration::from_secs(s)
}

/// Both users' servers fail (`ok` false) or start (`ok` true) at `at`; the transitions.
fn round(d: &mut Detector, ok: bool, at: SystemTime) -> Vec<Transition> {
    let result = || if ok { ProbeResult::Ok } else { failed("Spawn failed") };
    let mut transitions = d.observe(&outcome("a", Capability::Server, result()), at);
    transitions.extend(d.observe(&outcome("b", Capability::Server, result()), at));
    transitions
}

#[test]
fn a_hub_that_flaps_inside_keep_open_for_stays_one_incident() {
    let mut d = Detector::new(DetectorSettings { keep_open_for: 2 * MIN, ..settings() });
    let mut all = Vec::new();
    // Fails and works in turn every 12 s for two minutes; a healthy spell gathers its two successes each time.
    for spell in 0..10u64 {
        let failing = spell % 2 == 0;
        for step in 0..3u64 {
            let at = seconds(spell * 12 + step * 4);
            all.extend(round(&mut d, !failing, at));
            all.extend(d.tick(at));
        }
    }
    assert_eq!(opened(&all), 1, "{all:#?}");
    assert!(!all.iter().any(|t| matches!(t, Transition::Recovered { .. })), "{all:#?}");
    let relapses = all.iter().filter(|t| matches!(t, Transition::Updated { relapse: Some(_), .. })).count();
    assert_eq!(relapses, 4, "each failing spell after a healthy one is a relapse, not a new incident: {all:#?}");
    // The last spell was healthy and it stays so: the recovery comes keep_open_for after the recovery rule
    // was met (the last spell's second success), dated then.
    let back = seconds(9 * 12 + 4);
    assert!(d.tick(back + Duration::from_secs(119)).is_empty(), "not before keep_open_for");
    let recovered = d.tick(back + Duration::from_secs(121));
    let [Transition::Recovered { at, .. }] = recovered.as_slice() else { panic!("{recovered:?}") };
    assert_eq!(*at, back, "dated when service came back");
}

#[test]
fn an_incident_adopted_without_symptoms_recovers_only_on_a_sign_of_health() {
    let mut d = Detector::new(settings());
    d.resume(&temple(), IncidentKind::HubAccess, Symptoms::default(), t(0));
    assert!(d.tick(t(1)).is_empty(), "nothing seen yet: still open");
    round(&mut d, true, t(2));
    let recovered = round(&mut d, true, t(3));
    assert!(matches!(recovered.as_slice(), [Transition::Recovered { .. }]), "{recovered:?}");
    let mut quiet = Detector::new(settings());
    quiet.resume(&temple(), IncidentKind::DaskGateway, Symptoms::default(), t(0));
    assert!(quiet.tick(t(14)).is_empty());
    assert_eq!(quiet.tick(t(16)).len(), 1, "a whole window without a sign of trouble");
}

#[test]
fn without_keep_open_for_the_recovery_is_at_once() {
    let mut d = Detector::new(settings());
    round(&mut d, false, t(1));
    round(&mut d, true, t(2));
    let recovered = round(&mut d, true, t(3));
    assert!(matches!(recovered.as_slice(), [Transition::Recovered { .. }]), "{recovered:?}");
}

fn temple() -> HubName {
    HubName::new("temple")
}

fn t(minutes: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MIN * minutes as u32
}

fn outcome(user: &str, capability: Capability, result: ProbeResult) -> ProbeOutcome {
    ProbeOutcome {
        hub: temple(),
        user: user.into(),
        capability,
        started_at: t(0),
        duration: Duration::ZERO,
        result,
        stages: vec![],
    }
}

fn failed(reason: &str) -> ProbeResult {
    ProbeResult::Failed(StepFailure::hub(Stage::Progress, reason))
}

fn opened(transitions: &[Transition]) -> usize {
    transitions.iter().filter(|t| matches!(t, Transition::Opened { .. })).count()
}

#[test]
fn one_user_is_a_support_ticket_two_open_an_incident() {
    let mut d = Detector::new(settings());
    assert!(d.observe(&outcome("a", Capability::Server, failed("quota")), t(1)).is_empty());
    assert_eq!(d.symptoms(&temple(), IncidentKind::HubAccess, t(1)).users().len(), 1, "visible as a support ticket");
    let transitions = d.observe(&outcome("b", Capability::Kernel, failed("dead")), t(2));
    let [Transition::Opened { kind, symptoms, .. }] = transitions.as_slice() else { panic!("{transitions:?}") };
    assert_eq!(*kind, IncidentKind::HubAccess);
    assert_eq!(symptoms.users(), BTreeSet::from(["a", "b"]), "the union of login, server and kernel");
    assert_eq!(symptoms.impact_start(), Some(t(1)), "the earliest failure among the affected");
    assert_eq!(symptoms.affected[&Capability::Server]["a"].reason, "quota");
}

#[test]
fn dask_gateway_is_its_own_kind() {
    let mut d = Detector::new(settings());
    d.observe(&outcome("a", Capability::Server, failed("x")), t(1));
    assert!(d.observe(&outcome("b", Capability::DaskGateway, failed("FAILED")), t(1)).is_empty());
    let transitions = d.observe(&outcome("c", Capability::DaskGateway, failed("FAILED")), t(2));
    assert!(matches!(transitions.as_slice(), [Transition::Opened { kind: IncidentKind::DaskGateway, .. }]));
    assert!(!d.is_open(&temple(), IncidentKind::HubAccess));
}

#[test]
fn blocked_and_monitor_faults_never_count() {
    let mut d = Detector::new(settings());
    let monitor = ProbeResult::Failed(StepFailure {
        cause: FailureCause::Monitor,
        ..StepFailure::hub(Stage::MintToken, "revoked")
    });
    for user in ["a", "b", "c"] {
        assert!(d.observe(&outcome(user, Capability::Login, monitor.clone()), t(1)).is_empty());
        assert!(
            d.observe(&outcome(user, Capability::Server, ProbeResult::Blocked { by: Capability::Login }), t(1))
                .is_empty()
        );
    }
    assert!(d.symptoms(&temple(), IncidentKind::HubAccess, t(1)).users().is_empty());
}

#[test]
fn failures_older_than_the_window_stop_counting() {
    let mut d = Detector::new(settings());
    d.observe(&outcome("a", Capability::Login, failed("x")), t(0));
    assert!(d.observe(&outcome("b", Capability::Login, failed("x")), t(16)).is_empty(), "a's failure expired");
    assert_eq!(d.symptoms(&temple(), IncidentKind::HubAccess, t(16)).users(), BTreeSet::from(["b"]));
}

#[test]
fn updates_are_material_only_when_users_or_symptoms_are_added() {
    let mut d = Detector::new(settings());
    d.observe(&outcome("a", Capability::Server, failed("x")), t(1));
    d.observe(&outcome("b", Capability::Server, failed("x")), t(1));
    let more = d.observe(&outcome("c", Capability::Server, failed("x")), t(2));
    assert!(matches!(more.as_slice(), [Transition::Updated { material: true, .. }]), "{more:?}");
    let new_symptom = d.observe(&outcome("a", Capability::Kernel, failed("y")), t(3));
    assert!(matches!(new_symptom.as_slice(), [Transition::Updated { material: true, .. }]), "{new_symptom:?}");
    let fewer = d.observe(&outcome("c", Capability::Server, ProbeResult::Ok), t(4));
    assert!(matches!(fewer.as_slice(), [Transition::Updated { material: false, .. }]), "{fewer:?}");
    assert!(
        d.observe(&outcome("a", Capability::Server, failed("again")), t(5)).is_empty(),
        "same people, same symptoms"
    );
}

#[test]
fn recovery_needs_two_successes_in_a_row_from_everyone() {
    let mut d = Detector::new(settings());
    d.observe(&outcome("a", Capability::Server, failed("x")), t(1));
    d.observe(&outcome("b", Capability::Server, failed("x")), t(1));
    d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(2));
    d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(2));
    assert!(d.is_open(&temple(), IncidentKind::HubAccess), "one success each is not yet recovery");
    d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(3));
    let transitions = d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(3));
    assert!(matches!(transitions.as_slice(), [Transition::Recovered { at, .. }] if *at == t(3)), "{transitions:?}");
}

#[test]
fn a_capability_that_never_failed_does_not_hold_a_recovery_back() {
    // Home is probed every 10 minutes: one success before the outage, none since. Once the servers work
    // again, the outage is over; home's single success must not keep it open until its next probe.
    let mut d = Detector::new(settings());
    for user in ["a", "b"] {
        d.observe(&outcome(user, Capability::Home, ProbeResult::Ok), t(0));
        d.observe(&outcome(user, Capability::Server, failed("x")), t(1));
    }
    assert!(d.is_open(&temple(), IncidentKind::HubAccess));
    for minute in [2, 3] {
        d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(minute));
        d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(minute));
    }
    assert!(!d.is_open(&temple(), IncidentKind::HubAccess), "recovered without waiting for home's next probe");

    // A capability that did fail still needs its run of successes.
    for user in ["a", "b"] {
        d.observe(&outcome(user, Capability::Home, failed("[Errno 28] No space left on device")), t(4));
    }
    for user in ["a", "b"] {
        d.observe(&outcome(user, Capability::Home, ProbeResult::Ok), t(5));
    }
    assert!(d.is_open(&temple(), IncidentKind::HubAccess), "one success after a failure is not yet recovery");
}

#[test]
fn a_resumed_incident_is_not_opened_again_and_still_recovers() {
    let mut d = Detector::new(settings());
    d.resume(&temple(), IncidentKind::HubAccess, Symptoms::default(), t(0));
    d.observe(&outcome("a", Capability::Server, failed("x")), t(1));
    let transitions = d.observe(&outcome("b", Capability::Server, failed("x")), t(1));
    assert!(matches!(transitions.as_slice(), [Transition::Updated { .. }]), "{transitions:?}");
    for minute in [2, 3] {
        d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(minute));
        d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(minute));
    }
    assert!(!d.is_open(&temple(), IncidentKind::HubAccess));
}

#[test]
fn a_resumed_incident_needs_fresh_evidence_before_it_recovers() {
    let failing = |user: &str| {
        let failure = UserFailure { stage: Stage::Progress, reason: "x".into(), since: t(0), last: t(0) };
        (user.to_string(), failure)
    };
    let reported =
        Symptoms { affected: BTreeMap::from([(Capability::Server, BTreeMap::from([failing("a"), failing("b")]))]) };
    let mut d = Detector::new(settings());
    d.resume(&temple(), IncidentKind::HubAccess, reported, t(1));
    assert!(d.tick(t(1)).is_empty(), "no attempts since the restart: no evidence of recovery");
    d.observe(&outcome("a", Capability::Login, ProbeResult::Ok), t(2));
    d.observe(&outcome("a", Capability::Login, ProbeResult::Ok), t(2));
    assert!(d.is_open(&temple(), IncidentKind::HubAccess), "logins say nothing about the failing servers");
    for minute in [3, 4] {
        d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(minute));
    }
    assert!(d.is_open(&temple(), IncidentKind::HubAccess), "b has not been seen again");
    for minute in [3, 4] {
        d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(minute));
    }
    assert!(!d.is_open(&temple(), IncidentKind::HubAccess));

    // A user no longer probed does not hold an incident open for more than a window.
    let reported = Symptoms { affected: BTreeMap::from([(Capability::Server, BTreeMap::from([failing("gone")]))]) };
    let mut d = Detector::new(settings());
    d.resume(&temple(), IncidentKind::HubAccess, reported, t(1));
    assert!(d.tick(t(10)).is_empty());
    assert!(matches!(d.tick(t(17)).as_slice(), [Transition::Recovered { .. }]));
}

#[test]
fn expiry_by_tick_recovers_when_failures_age_out() {
    let mut d = Detector::new(settings());
    d.observe(&outcome("a", Capability::Login, failed("x")), t(0));
    d.observe(&outcome("b", Capability::Login, failed("x")), t(0));
    assert!(d.tick(t(10)).is_empty());
    let transitions = d.tick(t(16));
    assert!(matches!(transitions.as_slice(), [Transition::Recovered { .. }]), "{transitions:?}");
}

const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];
const CAPABILITIES: [Capability; 3] = [Capability::Login, Capability::Server, Capability::Kernel];

fn any_event() -> impl Strategy<Value = (usize, usize, bool, u64)> {
    (0..USERS.len(), 0..CAPABILITIES.len(), any::<bool>(), 0u64..5)
}

proptest! {
    /// Whatever the sequence: an incident opens only with N distinct affected users, never twice at once
    /// for the same hub and kind, and whenever N distinct users fail within the window one is open.
    #[test]
    fn incidents_follow_the_threshold(events in proptest::collection::vec(any_event(), 1..120)) {
        let mut d = Detector::new(settings());
        let mut now = t(0);
        let mut open = false;
        for (user, capability, ok, advance) in events {
            now += MIN * advance as u32;
            let result = if ok { ProbeResult::Ok } else { failed("x") };
            for transition in d.observe(&outcome(USERS[user], CAPABILITIES[capability], result), now) {
                match transition {
                    Transition::Opened { symptoms, .. } => {
                        prop_assert!(!open, "opened twice at once");
                        prop_assert!(symptoms.users().len() >= 2, "opened with {:?}", symptoms.users());
                        open = true;
                    }
                    Transition::Recovered { .. } => { prop_assert!(open); open = false; }
                    Transition::Updated { .. } => prop_assert!(open),
                }
            }
            let affected = d.symptoms(&temple(), IncidentKind::HubAccess, now).users().len();
            if affected >= 2 {
                prop_assert!(open && d.is_open(&temple(), IncidentKind::HubAccess), "{} affected and no incident", affected);
            }
        }
    }

    /// A capability that alternates fail/ok every round pages at most once.
    #[test]
    fn flapping_pages_at_most_once(rounds in 2usize..60, minutes_per_round in 1u64..10) {
        let mut d = Detector::new(settings());
        let mut opens = 0;
        for round in 0..rounds {
            let now = t(round as u64 * minutes_per_round);
            let result = if round % 2 == 0 { failed("flap") } else { ProbeResult::Ok };
            for user in ["u1", "u2"] {
                opens += opened(&d.observe(&outcome(user, Capability::Server, result.clone()), now));
            }
        }
        prop_assert!(opens <= 1, "opened {} times", opens);
    }
}

fn stuck(users: &[&str], since: SystemTime) -> BTreeMap<String, (String, SystemTime)> {
    users
        .iter()
        .map(|u| (u.to_string(), (format!("pod jupyter-{u}: container notebook ImagePullBackOff"), since)))
        .collect()
}

#[test]
fn two_real_users_with_stuck_pods_open_an_incident_while_every_probe_passes() {
    let mut d = Detector::new(settings());
    for user in ["probe-1", "probe-2", "probe-1", "probe-2"] {
        d.observe(&outcome(user, Capability::Server, ProbeResult::Ok), t(0));
    }
    assert!(
        d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["alice"], t(1)), t(2)).is_empty(),
        "one is a ticket"
    );
    let transitions =
        d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["alice", "bob"], t(1)), t(3));
    let [Transition::Opened { symptoms, .. }] = transitions.as_slice() else { panic!("{transitions:?}") };
    assert_eq!(symptoms.users(), BTreeSet::from(["alice", "bob"]));
    let alice = &symptoms.affected[&Capability::Server]["alice"];
    assert_eq!((alice.stage, alice.since), (Stage::UserPod, t(1)));
    assert!(alice.reason.contains("ImagePullBackOff"));

    // Signals do not age out with the window: the pods are still stuck an hour later.
    assert!(d.tick(t(63)).is_empty());
    assert!(d.is_open(&temple(), IncidentKind::HubAccess));
    // One pod recovers: a change, not material. Both recover: the incident recovers.
    let transitions = d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["bob"], t(1)), t(64));
    assert!(matches!(transitions.as_slice(), [Transition::Updated { material: false, .. }]), "{transitions:?}");
    let transitions = d.signals(&temple(), SignalSource::Pods, Capability::Server, BTreeMap::new(), t(65));
    assert!(matches!(transitions.as_slice(), [Transition::Recovered { .. }]), "{transitions:?}");
}

#[test]
fn real_users_and_probe_users_count_together_and_a_probe_failure_says_more() {
    let mut d = Detector::new(settings());
    d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["alice"], t(0)), t(1));
    let transitions = d.observe(&outcome("probe-1", Capability::Server, failed("Spawn failed: quota")), t(2));
    let [Transition::Opened { symptoms, .. }] = transitions.as_slice() else { panic!("{transitions:?}") };
    assert_eq!(symptoms.users(), BTreeSet::from(["alice", "probe-1"]));
    // A probe user who also has a stuck pod is counted once, with the probe's reason.
    d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["alice", "probe-1"], t(0)), t(3));
    let now = d.symptoms(&temple(), IncidentKind::HubAccess, t(3));
    assert_eq!(now.users().len(), 2);
    assert_eq!(now.affected[&Capability::Server]["probe-1"].reason, "Spawn failed: quota");
}

#[test]
fn a_resumed_incident_of_real_users_recovers_when_the_watcher_reports_them_gone() {
    let mut d = Detector::new(settings());
    let mut reported = Symptoms::default();
    for (user, (reason, since)) in stuck(&["alice", "bob"], t(0)) {
        let failure = UserFailure { stage: Stage::UserPod, reason, since, last: t(1) };
        reported.affected.entry(Capability::Server).or_default().insert(user, failure);
    }
    d.resume(&temple(), IncidentKind::HubAccess, reported, t(2));
    let transitions = d.signals(&temple(), SignalSource::Pods, Capability::Server, BTreeMap::new(), t(3));
    assert!(matches!(transitions.as_slice(), [Transition::Recovered { .. }]), "{transitions:?}");
}

#[test]
fn each_source_of_real_users_replaces_only_its_own_news() {
    let mut d = Detector::new(settings());
    d.signals(&temple(), SignalSource::Pods, Capability::Server, stuck(&["alice"], t(0)), t(1));
    let transitions = d.signals(&temple(), SignalSource::HubLogs, Capability::Server, stuck(&["bob"], t(0)), t(2));
    assert_eq!(opened(&transitions), 1, "a stuck pod and a failed spawn in the hub's log: two users");
    let transitions = d.signals(&temple(), SignalSource::Pods, Capability::Server, BTreeMap::new(), t(3));
    assert!(matches!(transitions.as_slice(), [Transition::Updated { material: false, .. }]), "{transitions:?}");
    assert!(d.is_open(&temple(), IncidentKind::HubAccess), "the pods' news does not clear the logs' news");
    let symptoms = d.symptoms(&temple(), IncidentKind::HubAccess, t(3));
    assert_eq!(symptoms.users().into_iter().collect::<Vec<_>>(), ["bob"]);
    let transitions = d.signals(&temple(), SignalSource::HubLogs, Capability::Server, BTreeMap::new(), t(4));
    assert!(matches!(transitions.as_slice(), [Transition::Recovered { .. }]), "{transitions:?}");
}

#[test]
fn slow_starts_of_enough_users_are_a_ticket_never_an_incident() {
    let mut d = Detector::new(settings());
    let slow = || ProbeResult::Slow(Slowness::Start { took: MIN * 3, limit: MIN * 2 });
    assert!(d.observe(&outcome("a", Capability::Server, slow()), t(1)).is_empty());
    assert!(d.slow_starts(&temple(), t(1)).is_empty(), "one slow user is below the threshold");
    assert!(d.observe(&outcome("b", Capability::Server, slow()), t(2)).is_empty(), "slow is never an incident");
    assert_eq!(d.slow_starts(&temple(), t(2)), ["a", "b"]);
    assert!(d.symptoms(&temple(), IncidentKind::HubAccess, t(2)).is_empty(), "nobody is affected: they started");
    d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(3));
    assert!(d.slow_starts(&temple(), t(3)).is_empty(), "a start in time clears its user");
    d.observe(&outcome("b", Capability::Server, slow()), t(4));
    d.observe(&outcome("b", Capability::Kernel, ProbeResult::Blocked { by: Capability::Login }), t(4));
    assert_eq!(d.slow_starts(&temple(), t(4)), ["a", "b"], "other capabilities say nothing of starts");
    assert!(d.slow_starts(&temple(), t(17)).is_empty(), "a's slow start aged out of the window");
    d.observe(&outcome("a", Capability::Server, failed("quota")), t(5));
    assert!(d.slow_starts(&temple(), t(5)).is_empty(), "a failed start is a failure, not slow");
}

#[test]
fn a_first_login_failure_is_its_own_ticket_never_an_affected_user() {
    let mut d = Detector::new(settings());
    let first = |result| outcome("a", Capability::FirstLogin, result);
    assert!(d.observe(&first(failed("Permission denied")), t(1)).is_empty());
    assert!(d.observe(&outcome("b", Capability::Server, failed("quota")), t(1)).is_empty(), "b alone: a ticket");
    assert_eq!(d.symptoms(&temple(), IncidentKind::HubAccess, t(1)).users(), BTreeSet::from(["b"]), "not a user");
    let failure = d.first_login_failure(&temple()).unwrap();
    assert_eq!((failure.stage, failure.reason.as_str()), (Stage::Progress, "Permission denied"));
    d.observe(&first(failed("Permission denied")), t(2));
    assert_eq!(d.first_login_failure(&temple()).unwrap().since, t(1), "since the first failure");
    d.observe(&first(ProbeResult::Ok), t(3));
    assert!(d.first_login_failure(&temple()).is_none(), "a pass closes it");
}

/// A Dask outcome from inside `user`'s server (it ran kernel stages), failed or ok.
fn from_server(user: &str, ok: bool) -> ProbeOutcome {
    let result =
        if ok { ProbeResult::Ok } else { ProbeResult::Failed(StepFailure::hub(Stage::ConnectFromServer, "no route")) };
    let stage = |stage| crate::domain::StageTiming { stage, seconds: 1.0 };
    ProbeOutcome {
        stages: vec![stage(Stage::StartKernel), stage(Stage::ConnectFromServer)],
        ..outcome(user, Capability::DaskGateway, result)
    }
}

#[test]
fn the_gateway_answering_hubwatch_does_not_clear_what_users_servers_meet() {
    let mut d = Detector::new(settings());
    let from_pod = |user: &str| outcome(user, Capability::DaskGateway, ProbeResult::Ok);
    assert_eq!(from_server("a", false).vantage(), Vantage::UsersServer);
    assert_eq!(from_pod("a").vantage(), Vantage::Hubwatch);
    // Each user's server fails to reach the scheduler, and in between the gateway answers hubwatch for both.
    let mut all = d.observe(&from_server("a", false), t(1));
    all.extend(d.observe(&from_pod("a"), t(2)));
    all.extend(d.observe(&from_pod("b"), t(2)));
    all.extend(d.observe(&from_server("b", false), t(3)));
    assert_eq!(opened(&all), 1, "two users cannot use Dask from their servers: {all:#?}");
    // The gateway answering hubwatch again and again is not a recovery; users' servers reaching it is.
    for minute in 4..8 {
        assert!(d.observe(&from_pod("a"), t(minute)).is_empty() && d.observe(&from_pod("b"), t(minute)).is_empty());
    }
    for minute in 8..10 {
        all.extend(d.observe(&from_server("a", true), t(minute)));
        all.extend(d.observe(&from_server("b", true), t(minute)));
    }
    assert!(matches!(all.last(), Some(Transition::Recovered { .. })), "{all:#?}");
}

#[test]
fn after_a_restart_the_gateway_answering_hubwatch_does_not_resolve_what_users_servers_met() {
    // The incident as the store kept it (a restart, a standby taking over): both users' servers could not
    // reach the scheduler. No attempt is remembered, of either vantage.
    let failing = |user: &str| {
        let failure =
            UserFailure { stage: Stage::ConnectFromServer, reason: "no route".into(), since: t(0), last: t(0) };
        (user.to_string(), failure)
    };
    let affected = BTreeMap::from([(Capability::DaskGateway, BTreeMap::from([failing("a"), failing("b")]))]);
    let mut d = Detector::new(settings());
    d.resume(&temple(), IncidentKind::DaskGateway, Symptoms { affected }, t(1));
    for minute in 2..6 {
        for user in ["a", "b"] {
            let transitions = d.observe(&outcome(user, Capability::DaskGateway, ProbeResult::Ok), t(minute));
            assert!(transitions.is_empty(), "the gateway answering hubwatch says nothing of users' servers");
        }
    }
    for minute in [6, 7] {
        d.observe(&from_server("a", true), t(minute));
        d.observe(&from_server("b", true), t(minute));
    }
    assert!(!d.is_open(&temple(), IncidentKind::DaskGateway), "users' servers reaching it again recover it");
}

#[test]
fn a_hub_is_quiet_until_something_fails_and_again_once_nothing_shows() {
    let mut d = Detector::new(settings());
    let (hub, kind) = (temple(), IncidentKind::HubAccess);
    assert!(d.is_quiet(&hub, kind), "never probed");
    d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(0));
    assert!(d.is_quiet(&hub, kind), "successes only");
    d.observe(&outcome("a", Capability::Server, failed("x")), t(1));
    assert!(!d.is_quiet(&hub, kind), "one user failing is shown (a support ticket)");
    d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(2));
    assert!(d.is_quiet(&hub, kind) && d.symptoms(&hub, kind, t(2)).users().is_empty(), "nothing left to show");
    for user in ["a", "b"] {
        d.observe(&outcome(user, Capability::Server, failed("x")), t(3));
    }
    assert!(d.is_open(&hub, kind));
    d.observe(&outcome("a", Capability::Server, ProbeResult::Ok), t(4));
    d.observe(&outcome("b", Capability::Server, ProbeResult::Ok), t(4));
    assert!(d.is_open(&hub, kind) && !d.is_quiet(&hub, kind), "an open incident is shown until it recovers");
    assert!(d.is_quiet(&hub, IncidentKind::DaskGateway), "another kind of the hub is its own");
}
