//! Lookups for the structures kept per hub, user and capability on every probe's path: found by the name the
//! caller has (a name is copied only the first time it is seen), and a handful of kinds or capabilities kept
//! as a short vector of pairs (a map would allocate for each).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// A map kept per hub or user on every probe's path. Hashed with foldhash (seeded per map): std's SipHash,
/// which also holds against keys chosen to collide however many are seen, was a hundredth of hubwatch's CPU
/// at 5,000 hubs; these keys are the configuration's names and the users a hub has.
pub type NameMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// `name`'s value, made with its default the first time (only then is `name` copied, or a hub's shared name
/// cloned).
pub fn named<'a, Q, V: Default, S: BuildHasher>(map: &'a mut HashMap<Q::Owned, V, S>, name: &Q) -> &'a mut V
where
    Q: ?Sized + Eq + Hash + ToOwned,
    Q::Owned: Eq + Hash + Borrow<Q>,
{
    if !map.contains_key(name) {
        map.insert(name.to_owned(), V::default());
    }
    map.get_mut(name).expect("inserted above")
}

/// The value paired with `key`, made with its default the first time.
pub fn paired<K: PartialEq, V: Default>(pairs: &mut Vec<(K, V)>, key: K) -> &mut V {
    let at = match pairs.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            pairs.push((key, V::default()));
            pairs.len() - 1
        }
    };
    &mut pairs[at].1
}
