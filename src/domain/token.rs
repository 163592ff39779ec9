//! API tokens as objects a user holds: each has a name, an optional expiry and a scope that
//! narrows what the user's role allows.

use super::{Invalid, Millis};
use serde::{Deserialize, Serialize};

/// What a token may be used for, within its holder's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Everything the role allows, managing tokens included.
    All,
    /// Reads only, of whatever the role may read.
    Read,
    /// Processes and instances, read and write.
    Instances,
    /// The callback settings, the delivery log and metrics, read and write.
    Webhooks,
}

/// What a route works on, as far as token scopes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Instances,
    Webhooks,
    Users,
    Tokens,
}

impl TokenScope {
    pub const ALL: [TokenScope; 4] = [
        TokenScope::All,
        TokenScope::Read,
        TokenScope::Instances,
        TokenScope::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::All => "all",
            TokenScope::Read => "read",
            TokenScope::Instances => "instances",
            TokenScope::Webhooks => "webhooks",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "`{text}` is not a token scope; use all, read, instances or webhooks"
                ))
            })
    }

    /// Whether a token of this scope may call a route on `area` (a write when `write`). Only
    /// an `all` token makes or revokes tokens, so no token can mint a wider one.
    pub fn allows(self, area: Area, write: bool) -> bool {
        match self {
            TokenScope::All => true,
            TokenScope::Read => !write,
            TokenScope::Instances => area == Area::Instances,
            TokenScope::Webhooks => area == Area::Webhooks,
        }
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's name, so its holder can tell their tokens apart: one line of 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub const MAX_LEN: usize = 100;
    /// The name of the token a new user gets with their account.
    pub const FIRST: &'static str = "first token";

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > Self::MAX_LEN {
            return Err(Invalid::new(format!(
                "a token's name must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        super::text::single_line("a token's name", text)?;
        Ok(Self(text.to_owned()))
    }

    pub fn first() -> Self {
        Self(Self::FIRST.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long a new token lasts: `None` for until revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime(Option<u32>);

impl TokenLifetime {
    /// The longest expiry a token may be given, in days (about ten years).
    pub const MAX_DAYS: u32 = 3650;

    pub const FOREVER: Self = Self(None);

    /// `days` from now (1 to [`Self::MAX_DAYS`]), or forever.
    pub fn days(days: Option<i64>) -> Result<Self, Invalid> {
        match days {
            None => Ok(Self(None)),
            Some(d) if (1..=i64::from(Self::MAX_DAYS)).contains(&d) => Ok(Self(Some(d as u32))),
            Some(_) => Err(Invalid::new(format!(
                "`expiresInDays` must be 1 to {}, or left out for a token that does not expire",
                Self::MAX_DAYS
            ))),
        }
    }

    /// When a token made at `now` expires.
    pub fn expires_at(self, now: Millis) -> Option<Millis> {
        self.0
            .map(|d| now.plus(std::time::Duration::from_secs(u64::from(d) * 86_400)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_what_a_token_may_do() {
        use Area::*;
        for area in [Instances, Webhooks, Users, Tokens] {
            assert!(TokenScope::All.allows(area, true));
            assert!(TokenScope::Read.allows(area, false));
            assert!(!TokenScope::Read.allows(area, true));
        }
        assert!(TokenScope::Instances.allows(Instances, true));
        assert!(!TokenScope::Instances.allows(Webhooks, false));
        assert!(!TokenScope::Webhooks.allows(Instances, false));
        assert!(TokenScope::Webhooks.allows(Webhooks, true));
        for scope in [
            TokenScope::Read,
            TokenScope::Instances,
            TokenScope::Webhooks,
        ] {
            assert!(!scope.allows(Tokens, true), "{scope} cannot mint tokens");
        }
        for scope in TokenScope::ALL {
            assert_eq!(TokenScope::parse(scope.as_str()), Ok(scope));
        }
        assert!(TokenScope::parse("admin").is_err());
    }

    #[test]
    fn names_and_lifetimes_are_checked() {
        assert_eq!(
            TokenName::parse("  CI deploys ").unwrap().as_str(),
            "CI deploys"
        );
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse("two\nlines").is_err());
        assert!(TokenName::parse(&"x".repeat(101)).is_err());
        assert_eq!(TokenLifetime::days(None), Ok(TokenLifetime::FOREVER));
        assert!(TokenLifetime::days(Some(0)).is_err());
        assert!(TokenLifetime::days(Some(3651)).is_err());
        let in_a_day = TokenLifetime::days(Some(1)).unwrap().expires_at(Millis(0));
        assert_eq!(in_a_day, Some(Millis(86_400_000)));
    }
}
