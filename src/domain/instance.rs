//! Process instances ("records"): readable IDs, unique IDs, data and status.

use super::{Invalid, ProcessName};
use serde_json::{Map, Value};
use std::fmt;

/// A readable instance ID, `<process-name>-<n>` with n ≥ 1 (`leave-request-7`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId {
    text: String,
    split: usize,
}

impl InstanceId {
    /// The ID of the n-th instance of a process.
    pub fn new(process: &ProcessName, number: i64) -> Self {
        let text = format!("{}-{number}", process.as_str());
        Self {
            split: process.as_str().len(),
            text,
        }
    }

    /// What [`InstanceId::parse`] takes, as a regular expression (for the OpenAPI document),
    /// besides the process name's length and the number's range.
    pub const PATTERN: &'static str = "^[a-z][a-z0-9]*(-[a-z0-9]+)*-[1-9][0-9]{0,18}$";

    /// Parses `<process-name>-<n>`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "`{text}` is not an instance ID; instance IDs look like leave-request-7"
            ))
        };
        let (name, number) = text.rsplit_once('-').ok_or_else(bad)?;
        let name = ProcessName::parse(name).map_err(|_| bad())?;
        let n: i64 = number.parse().map_err(|_| bad())?;
        if n < 1 || number.starts_with('0') || number.starts_with('+') {
            return Err(bad());
        }
        Ok(Self::new(&name, n))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The process part of the ID.
    pub fn process_name(&self) -> &str {
        &self.text[..self.split]
    }

    /// The number part of the ID.
    pub fn number(&self) -> i64 {
        self.text[self.split + 1..].parse().unwrap_or(0)
    }
}

impl serde::Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl serde::Serialize for InstanceData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The 32-character lower-case hex system ID of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueId(String);

impl UniqueId {
    /// A new ID: a UUIDv7 (creation time, then 74 random bits), so new rows go at the end of the
    /// index on it instead of a random page of it.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Instance data: always a JSON object, at most 256 KiB when serialised and nested at most
/// [`InstanceData::MAX_DEPTH`] levels, so whatever is accepted can be read back.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceData(Map<String, Value>);

impl InstanceData {
    /// Largest serialised size accepted.
    pub const MAX_BYTES: usize = 256 * 1024;
    /// Deepest nesting accepted, the object itself counting as one level; far below the
    /// JSON parser's own limit of 128, which stored data must never reach.
    pub const MAX_DEPTH: usize = 64;

    pub fn parse(value: Value) -> Result<Self, Invalid> {
        match value {
            Value::Object(map) => {
                let data = Self(map);
                if depth(data.as_map()) > Self::MAX_DEPTH {
                    return Err(Invalid::new(format!(
                        "`data` is nested deeper than {} levels",
                        Self::MAX_DEPTH
                    )));
                }
                if data.to_json().len() > Self::MAX_BYTES {
                    return Err(Invalid::new("`data` is larger than 256 KiB"));
                }
                Ok(data)
            }
            other => Err(Invalid::new(format!(
                "`data` must be a JSON object, not {}",
                json_kind(&other)
            ))),
        }
    }

    /// Parses data stored by Herald itself; what cannot be read back is an error, never an
    /// empty object.
    pub fn from_stored(text: &str) -> Result<Self, Invalid> {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(Invalid::new(format!(
                "stored instance data is {}, not an object",
                json_kind(&other)
            ))),
            Err(e) => Err(Invalid::new(format!(
                "stored instance data cannot be read: {e}"
            ))),
        }
    }

    pub fn empty() -> Self {
        Self(Map::new())
    }

    /// Applies a JSON merge patch (RFC 7396) and says whether anything changed.
    pub fn merge_patch(&self, patch: &InstanceData) -> Result<InstanceData, Invalid> {
        let mut target = Value::Object(self.0.clone());
        merge(&mut target, &Value::Object(patch.0.clone()));
        Self::parse(target)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(patch) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(target) = target {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Levels of nesting of an object's values, the object counting as one.
fn depth(map: &Map<String, Value>) -> usize {
    fn of(value: &Value) -> usize {
        match value {
            Value::Object(map) => depth(map),
            Value::Array(items) => 1 + items.iter().map(of).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + map.values().map(of).max().unwrap_or(0)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An instance's status: the name of its active stage, or `Completed`; 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus(String);

impl InstanceStatus {
    /// The status of a new instance when none is given.
    pub const DEFAULT: &'static str = "Active";

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 64 {
            return Err(Invalid::new("`status` must be 1 to 64 characters"));
        }
        super::text::single_line("`status`", text)?;
        Ok(Self(text.to_owned()))
    }

    pub fn default_status() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Strings that match a documented pattern.
    fn matching(pattern: &str) -> impl Strategy<Value = String> {
        let body = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(body).expect("a pattern proptest can generate from")
    }

    proptest! {
        /// The OpenAPI document's patterns never promise what parsing refuses (beyond the
        /// lengths and ranges they leave to parsing).
        #[test]
        fn the_documented_patterns_parse(
            name in matching(ProcessName::PATTERN),
            id in matching(InstanceId::PATTERN),
            delivery in matching(crate::domain::DeliveryId::PATTERN),
        ) {
            if name.len() <= ProcessName::MAX_LEN {
                prop_assert!(ProcessName::parse(&name).is_ok(), "{name}");
            }
            let (process, number) = id.rsplit_once('-').expect("a hyphen");
            if process.len() <= ProcessName::MAX_LEN && number.parse::<i64>().is_ok() {
                prop_assert!(InstanceId::parse(&id).is_ok(), "{id}");
            }
            prop_assert!(crate::domain::DeliveryId::parse(&delivery).is_ok(), "{delivery}");
        }
    }

    #[test]
    fn instance_ids() {
        let name = ProcessName::parse("leave-request").unwrap();
        let id = InstanceId::new(&name, 7);
        assert_eq!(id.as_str(), "leave-request-7");
        let parsed = InstanceId::parse("leave-request-7").unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.process_name(), "leave-request");
        assert_eq!(parsed.number(), 7);
        for bad in [
            "leave-request",
            "leave-request-0",
            "leave-request-07",
            "-1",
            "Leave-1",
            "a-+1",
            "a--1",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unique_ids_are_32_hex() {
        let u = UniqueId::generate();
        assert_eq!(u.as_str().len(), 32);
        assert!(u.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn data_must_be_an_object() {
        assert!(
            InstanceData::parse(json!([1]))
                .unwrap_err()
                .0
                .contains("an array")
        );
        assert!(InstanceData::parse(json!({"a": 1})).is_ok());
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let base = InstanceData::parse(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 5})).unwrap();
        let patch = InstanceData::parse(json!({"a": null, "b": {"c": 4}, "f": [1]})).unwrap();
        let out = base.merge_patch(&patch).unwrap();
        assert_eq!(
            Value::Object(out.as_map().clone()),
            json!({"b": {"c": 4, "d": 3}, "e": 5, "f": [1]})
        );
        assert_eq!(base.merge_patch(&InstanceData::empty()).unwrap(), base);
    }

    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({}), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn data_nested_too_deep_is_refused_and_what_is_accepted_reads_back() {
        let deepest = InstanceData::parse(nested(InstanceData::MAX_DEPTH)).unwrap();
        assert_eq!(
            InstanceData::from_stored(&deepest.to_json()).unwrap(),
            deepest
        );
        let err = InstanceData::parse(nested(InstanceData::MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err.0, "`data` is nested deeper than 64 levels");
        let arrays = json!({ "a": (0..InstanceData::MAX_DEPTH).fold(json!(1), |v, _| json!([v])) });
        assert!(
            InstanceData::parse(arrays).is_err(),
            "arrays count as levels"
        );
    }

    #[test]
    fn unreadable_stored_data_is_an_error_not_an_empty_object() {
        let too_deep = "[".repeat(200) + &"]".repeat(200);
        assert!(InstanceData::from_stored(&format!("{{\"a\":{too_deep}}}")).is_err());
        assert!(InstanceData::from_stored("[1]").is_err());
        assert!(InstanceData::from_stored("{").is_err());
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(70, 256, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the parser accepts is stored as text and reads back equal, or it is
        /// refused with a reason; it never panics.
        #[test]
        fn accepted_data_reads_back_equal(value in any_json()) {
            let value = json!({ "field": value });
            if let Ok(data) = InstanceData::parse(value) {
                prop_assert_eq!(InstanceData::from_stored(&data.to_json()).unwrap(), data);
            }
        }
    }
}
