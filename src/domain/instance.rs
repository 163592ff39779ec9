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

/// Instance data: always a JSON object, at most 256 KiB when serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceData(Map<String, Value>);

impl InstanceData {
    /// Largest serialised size accepted.
    pub const MAX_BYTES: usize = 256 * 1024;

    pub fn parse(value: Value) -> Result<Self, Invalid> {
        match value {
            Value::Object(map) => {
                let data = Self(map);
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

    /// Parses data stored by Herald itself.
    pub fn from_stored(text: &str) -> Self {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Self(map),
            _ => Self(Map::new()),
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
    use serde_json::json;

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
}
