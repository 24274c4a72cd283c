//! Lookups for the structures kept per hub, user and capability on every probe's path: found by the name the
//! caller has (a name is copied only the first time it is seen), and a handful of kinds or capabilities kept
//! as a short vector of pairs (a map would allocate for each).

use std::collections::HashMap;

/// `name`'s value, made with its default the first time (only then is `name` copied).
pub fn named<'a, V: Default>(map: &'a mut HashMap<String, V>, name: &str) -> &'a mut V {
    if !map.contains_key(name) {
        map.insert(name.to_string(), V::default());
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
