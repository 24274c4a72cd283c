//! The two names every stage passes along: a hub's ([`HubName`]) and an incident's ([`IncidentKey`]). As types
//! of their own, a function that takes one cannot be handed the other, nor a user's name.

use super::IncidentKind;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What both names are besides themselves: text, read and written as the text they hold (made from it, shown as
/// it, compared with it). A key made from text is one as it was stored, sent or asked for (the store,
/// PagerDuty, a page's URL): whether an incident has it is the store's to say.
macro_rules! text_name {
    ($($name:ident),*) => {$(
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                $name(text.into())
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                $name(text.into())
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    )*};
}

text_name!(HubName, IncidentKey);

/// A hub's name as the configuration (or discovery) gives it: a metric label, part of an incident key and of
/// a URL. Shared, not copied: a hub's outcomes, transitions, detector entries and status rows hold the one
/// its config holds.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct HubName(Arc<str>);

impl HubName {
    pub fn new(name: &str) -> Self {
        HubName::from(name)
    }

    /// What a cluster incident is kept under in place of a hub: `cluster NAME` (no hub's name holds a space).
    pub fn cluster(cluster: &str) -> Self {
        HubName(format!("cluster {cluster}").into())
    }
}

impl Borrow<str> for HubName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&HubName> for HubName {
    fn eq(&self, other: &&HubName) -> bool {
        self == *other
    }
}

/// An incident's key, also PagerDuty's dedup key: who failed (a hub, or `cluster.NAME`), the kind and the
/// second it opened — `lab-server-1765000000`, made `…-2` when that key was taken already.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentKey(String);

impl IncidentKey {
    /// The key of `hub`'s incident of `kind` opened at `opened`.
    pub fn for_hub(hub: &HubName, kind: IncidentKind, opened: SystemTime) -> Self {
        IncidentKey::made(hub, kind, opened)
    }

    /// The key of cluster `cluster`'s incident of `kind` opened at `opened`.
    pub fn for_cluster(cluster: &str, kind: IncidentKind, opened: SystemTime) -> Self {
        IncidentKey::made(&format!("{}{cluster}", IncidentKey::CLUSTER), kind, opened)
    }

    /// What a cluster incident's key starts with, before the cluster's name.
    pub const CLUSTER: &'static str = "cluster.";

    fn made(prefix: &str, kind: IncidentKind, opened: SystemTime) -> Self {
        let seconds = opened.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        IncidentKey(format!("{prefix}-{}-{seconds}", kind.as_str()))
    }

    /// Whose it is, its kind and its opening second, when it was made for one of `owners` (hub names or
    /// `cluster.NAME`s).
    pub fn parse<'a>(&self, owners: &'a [String]) -> Option<(&'a str, IncidentKind, u64)> {
        owners.iter().find_map(|owner| {
            let rest = self.0.strip_prefix(owner.as_str())?.strip_prefix('-')?;
            let kind = IncidentKind::ALL.into_iter().find(|k| rest.starts_with(&format!("{}-", k.as_str())))?;
            let mut numbers = rest[kind.as_str().len() + 1..].split('-');
            let seconds = numbers.next()?.parse().ok()?;
            let suffix_ok = numbers.next().is_none_or(|n| n.parse::<u32>().is_ok()) && numbers.next().is_none();
            suffix_ok.then_some((owner.as_str(), kind, seconds))
        })
    }
}

impl PartialEq<String> for IncidentKey {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<IncidentKey> for String {
    fn eq(&self, other: &IncidentKey) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_names_its_owner_kind_and_second_and_parses_back_with_its_number() {
        let at = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let key = IncidentKey::for_hub(&HubName::new("lab-east"), IncidentKind::HubAccess, at);
        assert_eq!(key, "lab-east-hub_access-1765000000");
        let owners = ["lab".to_string(), "lab-east".to_string()];
        assert_eq!(
            IncidentKey::from(format!("{key}-2")).parse(&owners),
            Some(("lab-east", IncidentKind::HubAccess, 1_765_000_000))
        );
        let cluster = IncidentKey::for_cluster("east", IncidentKind::DaskGateway, at);
        assert_eq!(cluster, "cluster.east-dask_gateway-1765000000");
        assert_eq!(IncidentKey::from("lab-hub_access-x").parse(&owners), None);
    }
}
