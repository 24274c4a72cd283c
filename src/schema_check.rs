//! A document checked against a JSON Schema before anything is read from it: every problem at once (serde
//! stops at the first), each with its key path and what was expected, in words for the person who wrote
//! it. Knows the parts of JSON Schema that schemars writes: `$ref`, `allOf`, `anyOf`/`oneOf` (options,
//! tagged and untagged enums), types, properties, required and unknown keys, items, enums, ranges, patterns
//! (said in the words of `x-form` where the schema has them); the formats `uri` and `regex`, and hubwatch's
//! own: `hubwatch-duration`, `hubwatch-duration-or-zero`, `hubwatch-address`, and `x-secret: true` (a
//! `{env: NAME}` / `{file: PATH}` reference, never inline).
//! Knows nothing of hubwatch's configuration itself (`config` gives it the schema and the moved keys).

use serde_json::{Map, Value};

/// What a duration looks like (the schema's pattern, for Helm; the check here also parses it).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ns|us|ms|s|m|h|d|w)\s*)+$";

/// Removes what `path` (`hubs[0].probes.login.every`) names from `tree`, if it is there.
pub fn remove(tree: &mut Value, path: &str) {
    let steps = steps(path);
    let Some((last, parents)) = steps.split_last() else { return };
    let mut node = tree;
    for step in parents {
        let next = match step.strip_prefix('[') {
            Some(i) => i.parse::<usize>().ok().and_then(|i| node.get_mut(i)),
            None => node.get_mut(step.as_str()),
        };
        let Some(next) = next else { return };
        node = next;
    }
    match (last.strip_prefix('['), node) {
        (None, Value::Object(map)) => drop(map.remove(last.as_str())),
        // An element is replaced by nothing rather than removed: the indices of the others stay.
        (Some(i), Value::Array(items)) => {
            if let Some(item) = i.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}

/// `hubs[0].probes` as `hubs`, `[0]`, `probes`.
fn steps(path: &str) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        steps.extend(pieces.next().filter(|p| !p.is_empty()).map(String::from));
        steps.extend(pieces.map(|i| format!("[{}", i.trim_end_matches(']'))));
    }
    steps
}

/// What a check found: every problem as (key path, problem), and the key paths whose values cannot be read
/// as the schema says (a string of the right shape that misses its pattern still can be, so the rules across
/// keys still see it).
#[derive(Default)]
pub struct Checked {
    pub problems: Vec<(String, String)>,
    pub unreadable: Vec<String>,
}

/// Every problem of `value` against `schema` (a root schema with `definitions`); `moved`: key paths renamed
/// or dropped, with what to do instead of only "unknown key".
pub fn against(schema: &Value, value: &Value, moved: &[(&str, &str)]) -> Checked {
    let mut checker = Checker { root: schema, moved, found: Checked::default() };
    checker.check(schema, value, "");
    checker.found
}

struct Checker<'a> {
    root: &'a Value,
    moved: &'a [(&'a str, &'a str)],
    found: Checked,
}

fn at(path: &str) -> String {
    if path.is_empty() { "(top level)".into() } else { path.to_string() }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// "a", "a or b", "a, b or c".
fn alternatives(words: &[String]) -> String {
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

impl<'a> Checker<'a> {
    fn add(&mut self, path: &str, problem: impl Into<String>) {
        self.found.unreadable.push(at(path));
        self.add_readable(path, problem);
    }

    fn add_readable(&mut self, path: &str, problem: impl Into<String>) {
        self.found.problems.push((at(path), problem.into()));
    }

    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
            Some(name) => self.resolve(&self.root["definitions"][name]),
            None => schema,
        }
    }

    fn check(&mut self, schema: &'a Value, value: &Value, path: &str) {
        let schema = self.resolve(schema);
        if schema["x-secret"] == true && !self.secret_shape(value, path) {
            return;
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.check(part, value, path);
        }
        let choices = schema["anyOf"].as_array().or(schema["oneOf"].as_array());
        if let Some(choices) = choices {
            return self.choose(choices, value, path);
        }
        if !self.type_matches(schema, value, path) {
            return;
        }
        match value {
            Value::Object(map) => self.object(schema, map, path),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, &format!("{path}[{i}]"));
                }
            }
            _ => self.scalar(schema, value, path),
        }
    }

    /// `{env: NAME}` or `{file: PATH}`, never the secret itself.
    fn secret_shape(&mut self, value: &Value, path: &str) -> bool {
        let problem = match value {
            Value::String(_) => "secrets must be given as {env: NAME} or {file: PATH}, never inline",
            Value::Object(map) if map.contains_key("env") && map.contains_key("file") => {
                "give either env or file, not both"
            }
            Value::Object(map) if map.is_empty() => "expected {env: NAME} or {file: PATH}",
            Value::Object(_) => return true,
            _ => "expected {env: NAME} or {file: PATH}",
        };
        self.add(path, problem);
        false
    }

    fn type_matches(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        let fits = |t: &str| match (t, value) {
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("number", Value::Number(_)) | ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
            ("object", Value::Object(_)) | ("array", Value::Array(_)) | ("null", Value::Null) => true,
            _ => false,
        };
        if types.iter().any(|t| fits(t)) {
            return true;
        }
        let expected = match types.first().copied().unwrap_or("") {
            "object" => "a mapping".to_string(),
            "array" => "a list".to_string(),
            "boolean" => "true or false".to_string(),
            "integer" => return self.out_of_range(schema, value, path),
            "string" if schema["format"].as_str().is_some_and(|f| f.starts_with("hubwatch-duration")) => {
                "a duration like 30s or 10m".to_string()
            }
            other => format!("a {other}"),
        };
        let found = match value {
            Value::Number(n) => n.to_string(),
            other => type_name(other).to_string(),
        };
        self.add(path, format!("expected {expected}, found {found}"));
        false
    }

    fn out_of_range(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let (min, max) = (schema["minimum"].as_f64().unwrap_or(0.0), schema["maximum"].as_f64());
        let range = max.map_or(format!("{min} or more"), |max| format!("from {min} to {max}"));
        let found = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        self.add(path, format!("expected a whole number {range}, found {found}"));
        false
    }

    fn object(&mut self, schema: &'a Value, map: &Map<String, Value>, path: &str) {
        let properties = schema["properties"].as_object();
        for key in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                self.add(&join(path, key), "is required");
            }
        }
        for (key, item) in map {
            let key_path = join(path, key);
            match properties.and_then(|p| p.get(key)) {
                Some(property) => self.check(property, item, &key_path),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => self.unknown(&key_path, properties),
                    Value::Object(_) => self.check(&schema["additionalProperties"], item, &key_path),
                    _ => {}
                },
            }
        }
    }

    fn unknown(&mut self, path: &str, properties: Option<&Map<String, Value>>) {
        if let Some((_, advice)) = self.moved.iter().find(|(key, _)| *key == path) {
            return self.add(path, *advice);
        }
        let known: Vec<&str> = properties.into_iter().flat_map(|p| p.keys()).map(String::as_str).collect();
        self.add(path, format!("unknown key (expected one of: {})", known.join(", ")));
    }

    fn scalar(&mut self, schema: &Value, value: &Value, path: &str) {
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            let key = path.rsplit('.').next().unwrap_or(path);
            let words: Vec<String> = allowed.iter().filter_map(Value::as_str).map(String::from).collect();
            return self.add(path, format!("unknown {key} {value} (expected {})", alternatives(&words)));
        }
        if let Some(n) = value.as_f64() {
            let (min, max) = (schema["minimum"].as_f64(), schema["maximum"].as_f64());
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let range = match (min, max) {
                    (Some(min), Some(max)) => format!("between {min} and {max}"),
                    (Some(min), None) => format!("at least {min}"),
                    (None, Some(max)) => format!("at most {max}"),
                    (None, None) => unreachable!("a bound was crossed"),
                };
                return self.add(path, format!("must be {range}, found {value}"));
            }
        }
        let Some(text) = value.as_str() else { return };
        match schema["format"].as_str() {
            Some("hubwatch-duration") => self.duration(text, false, path),
            Some("hubwatch-duration-or-zero") => self.duration(text, true, path),
            Some("hubwatch-address") if text.parse::<std::net::SocketAddr>().is_err() => {
                self.add(path, format!("expected an address like 127.0.0.1:9464, found {text:?}"))
            }
            Some("cidr") if text.parse::<ipnet::IpNet>().is_err() => {
                self.add(path, format!("expected an address block like 10.0.0.0/8, found {text:?}"))
            }
            Some("regex") => {
                if let Err(e) = regex::Regex::new(text) {
                    self.add(path, format!("not a regular expression: {e}"));
                }
            }
            Some("uri") => {
                if let Err(e) = url::Url::parse(text) {
                    self.add(path, format!("{text:?} is not a URL: {e}"));
                }
            }
            // A duration's pattern is Helm's; its own check above says more.
            Some(f) if f.starts_with("hubwatch-duration") => {}
            _ => self.pattern(schema, text, path),
        }
    }

    fn pattern(&mut self, schema: &Value, text: &str, path: &str) {
        let Some(pattern) = schema["pattern"].as_str() else { return };
        if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text)) {
            let key = path.rsplit('.').next().unwrap_or(path).split('[').next().unwrap_or(path);
            let form = schema["x-form"].as_str().map_or_else(|| format!("expected the form {pattern}"), String::from);
            self.add_readable(path, format!("{text:?} is not a valid {key}: {form}"));
        }
    }

    fn duration(&mut self, text: &str, zero: bool, path: &str) {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() && zero => {}
            Ok(d) if d < std::time::Duration::from_secs(1) => {
                self.add(path, format!("must be at least 1s, found {text:?}"))
            }
            Ok(_) => {}
            Err(e) => self.add(path, format!("invalid duration {text:?} ({e}); use forms like 30s, 10m, 1h")),
        }
    }

    /// One of several shapes: an option (null or the shape), a tagged enum (the branch its tag names), an
    /// untagged one (the branch that fits best).
    fn choose(&mut self, choices: &'a [Value], value: &Value, path: &str) {
        let choices: Vec<&'a Value> = choices.iter().map(|c| self.resolve(c)).collect();
        if value.is_null() && choices.iter().any(|c| c["type"] == "null") {
            return;
        }
        let choices: Vec<&'a Value> = choices.into_iter().filter(|c| c["type"] != "null").collect();
        if let Some(tag) = common_tag(&choices) {
            let Value::Object(map) = value else {
                return self.add(path, format!("expected a mapping, found {}", type_name(value)));
            };
            let Some(found) = map.get(tag) else { return self.add(&join(path, tag), "is required") };
            return match choices.iter().find(|c| tag_of(c, tag).is_some_and(|name| found == name)) {
                Some(branch) => self.check(branch, value, path),
                None => {
                    let names: Vec<String> = choices.iter().filter_map(|c| tag_of(c, tag)).map(String::from).collect();
                    self.add(&join(path, tag), format!("unknown {tag} {found} (expected {})", alternatives(&names)))
                }
            };
        }
        let mut best: Option<Checked> = None;
        for choice in &choices {
            let mut trial = Checker { root: self.root, moved: self.moved, found: Checked::default() };
            trial.check(choice, value, path);
            if trial.found.problems.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| trial.found.problems.len() < b.problems.len()) {
                best = Some(trial.found);
            }
        }
        let best = best.unwrap_or_default();
        self.found.problems.extend(best.problems);
        self.found.unreadable.extend(best.unreadable);
    }
}

/// The property every choice names with a constant of its own (a tagged enum's tag), if there is one.
fn common_tag<'v>(choices: &[&'v Value]) -> Option<&'v str> {
    let first = choices.first()?;
    let required = first["required"].as_array()?.iter().filter_map(Value::as_str);
    let tag = required.into_iter().find(|t| tag_of(first, t).is_some())?;
    choices.iter().all(|c| tag_of(c, tag).is_some()).then_some(tag)
}

/// The constant a choice's `tag` property must have (`const`, or a one-value `enum`).
fn tag_of<'v>(choice: &'v Value, tag: &str) -> Option<&'v str> {
    let property = &choice["properties"][tag];
    property["const"].as_str().or_else(|| property["enum"].as_array().filter(|e| e.len() == 1)?[0].as_str())
}

/// A YAML document with where each node is, to give a problem's line and column.
pub struct Located(serde_saphyr::Spanned<Node>);

pub enum Node {
    /// Each key with where it is written, and its value.
    Map(Vec<(String, serde_saphyr::Location, Located)>),
    List(Vec<Located>),
    Scalar,
}

impl Located {
    /// The line and column of what `path` names (a key where it is written), or of the nearest thing above
    /// it that is there (a missing key's mapping).
    pub fn find(&self, path: &str) -> Option<(u64, u64)> {
        let (mut node, mut at) = (self, self.0.referenced);
        for step in steps(path) {
            let next = match (&node.0.value, step.strip_prefix('[')) {
                (Node::Map(entries), None) => entries.iter().find(|(k, ..)| *k == step).map(|(_, at, v)| (*at, v)),
                (Node::List(items), Some(i)) => {
                    i.parse::<usize>().ok().and_then(|i| items.get(i)).map(|item| (item.0.referenced, item))
                }
                _ => None,
            };
            let Some(next) = next else { break };
            (at, node) = next;
        }
        (at.line() > 0).then(|| (at.line(), at.column()))
    }
}

impl<'de> serde::Deserialize<'de> for Located {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_saphyr::Spanned::deserialize(d).map(Located)
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<serde_saphyr::Spanned<Value>, Located>()? {
            let name = key.value.as_str().map_or_else(|| key.value.to_string(), String::from);
            entries.push((name, key.referenced, value));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
}
