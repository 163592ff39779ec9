//! Processes: a named design whose runs are instances.

use super::Invalid;
use std::fmt;

/// A process name: lower-case kebab-case, 1 to 64 characters (`leave-request`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessName(String);

impl ProcessName {
    /// Longest name accepted.
    pub const MAX_LEN: usize = 64;
    /// What [`ProcessName::parse`] takes, as a regular expression (for the OpenAPI document),
    /// besides the length.
    pub const PATTERN: &'static str = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$";

    /// Parses a name, saying which rule it breaks.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() {
            return Err(Invalid::new("the process name is empty"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(Invalid::new(format!(
                "the process name is longer than {} characters",
                Self::MAX_LEN
            )));
        }
        let valid_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let well_placed = !text.starts_with('-') && !text.ends_with('-') && !text.contains("--");
        if !valid_chars || !well_placed {
            return Err(Invalid::new(format!(
                "`{text}` is not a valid process name: use lower-case letters, digits and single hyphens, such as leave-request"
            )));
        }
        if !text.as_bytes()[0].is_ascii_lowercase() {
            return Err(Invalid::new(format!(
                "`{text}` is not a valid process name: it must start with a letter"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process title: free text, 1 to 200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTitle(String);

impl ProcessTitle {
    pub const MAX_LEN: usize = 200;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Invalid::new("the process title is empty"));
        }
        super::text::single_line("the process title", text)?;
        if text.chars().count() > Self::MAX_LEN {
            return Err(Invalid::new(format!(
                "the process title is longer than {} characters",
                Self::MAX_LEN
            )));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["leave-request", "a", "safety-inspection-2", &"a".repeat(64)] {
            assert!(ProcessName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Leave",
            "leave_request",
            "-a",
            "a-",
            "a--b",
            "1abc",
            "é",
            &"a".repeat(65),
            "a b",
        ] {
            assert!(ProcessName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn titles() {
        assert_eq!(
            ProcessTitle::parse("  Leave request ").unwrap().as_str(),
            "Leave request"
        );
        assert!(ProcessTitle::parse("   ").is_err());
        assert!(ProcessTitle::parse(&"x".repeat(201)).is_err());
    }
}
