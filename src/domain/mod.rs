//! The domain's vocabulary, used by every stage of the flow and using nothing of hubwatch's own: what a
//! probe finds ([`ProbeOutcome`]), what the detector decides ([`Transition`]), what a sink is asked to say
//! ([`Message`]), the names every stage passes along ([`HubName`], [`IncidentKey`]), and the [`Secret`] type.

mod hold;
mod incident;
pub mod lookup;
mod names;
mod outgoing;
mod probe;
mod response;
mod secret;
pub mod wording;

pub use hold::{DeploymentState, Hold, Rollout, Silence, SilenceSource};
pub use incident::{
    AffectedEver, HubChange, HubNews, IncidentKind, RealUsers, SignalSource, Symptoms, TicketKind, Transition,
    UserFailure,
};
pub use names::{HubName, IncidentKey};
pub use outgoing::{
    ChangeNotice, Channel, EventAction, Message, Notice, NoticeEvent, NoticeKind, Page, PartNotice, RouteNotice,
    Severity,
};
pub use probe::{
    Capability, FailureCause, ProbeOutcome, ProbeResult, SERVER_START_BUCKETS, Slowness, Stage, StageTiming,
    StepFailure, Vantage, round_ms,
};
pub use response::{Act, Response, ResponseChange, ResponseStatus};
pub use secret::Secret;
