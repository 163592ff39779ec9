//! Users, roles and API tokens.

use super::Invalid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A user's system role. Only administrators and developers configure webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Administrator,
    Developer,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Developer => "developer",
            Role::User => "user",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "administrator" => Ok(Role::Administrator),
            "developer" => Ok(Role::Developer),
            "user" => Ok(Role::User),
            other => Err(Invalid::new(format!(
                "`{other}` is not a role; use administrator, developer or user"
            ))),
        }
    }

    /// Whether this role may read and change webhook settings and deliveries.
    pub fn manages_webhooks(self) -> bool {
        matches!(self, Role::Administrator | Role::Developer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email address, lower-cased: something@something, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim().to_lowercase();
        super::text::single_line("the email address", &text)?;
        let valid = text.len() <= 254
            && !text.chars().any(char::is_whitespace)
            && matches!(text.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if !valid {
            return Err(Invalid::new(format!("`{text}` is not an email address")));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's display name, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 100 {
            return Err(Invalid::new("the display name must be 1 to 100 characters"));
        }
        super::text::single_line("the display name", text)?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plain-text password on its way to being hashed; never printed by `Debug`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.chars().count() < 10 {
            return Err(Invalid::new("the password must be at least 10 characters"));
        }
        if text.len() > 1024 {
            return Err(Invalid::new("the password is longer than 1024 bytes"));
        }
        Ok(Self(text.to_owned()))
    }

    /// A random 20-character password.
    pub fn generate() -> Self {
        Self(random_alphanumeric(20))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The argon2id PHC string of this password.
    pub fn hash(&self) -> String {
        use argon2::PasswordHasher;
        let salt_bytes: [u8; 16] = rand::random();
        let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
            .expect("16 bytes is a valid salt length");
        argon2::Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)
            .map(|h| h.to_string())
            .expect("argon2 hashing with default parameters cannot fail")
    }

    /// Whether this password matches a stored argon2 PHC string.
    pub fn verify(&self, phc: &str) -> bool {
        use argon2::PasswordVerifier;
        match argon2::password_hash::PasswordHash::new(phc) {
            Ok(hash) => argon2::Argon2::default()
                .verify_password(self.0.as_bytes(), &hash)
                .is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An API token as the client holds it (`hrld_…`). Only its hash is ever stored.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// The prefix of every token Herald generates.
    pub const PREFIX: &'static str = "hrld_";

    /// A new random token: `hrld_` and 40 alphanumeric characters (about 238 bits).
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_alphanumeric(40)))
    }

    /// A token chosen by the operator (`HERALD_ADMIN_TOKEN`): 20 to 200 visible ASCII characters.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let ok = (20..=200).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(Invalid::new(
                "an API token must be 20 to 200 visible ASCII characters without spaces",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What lists show of the token: `hrld_` and the next four characters of a generated
    /// one (24 of its 238 bits); nothing of one an operator chose, which may be short.
    pub fn shown_prefix(&self) -> String {
        let generated = self.0.len() == Self::PREFIX.len() + 40 && self.0.starts_with(Self::PREFIX);
        if generated {
            self.0[..Self::PREFIX.len() + 4].to_owned()
        } else {
            String::new()
        }
    }

    /// The SHA-256 of the token: what storage keeps and looks up. A fast hash is right here
    /// because tokens are long random strings, not guessable passwords.
    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// The hex SHA-256 of an API token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn random_alphanumeric(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(Role::parse("developer").unwrap(), Role::Developer);
        assert!(Role::parse("Admin").is_err());
        assert!(Role::Developer.manages_webhooks());
        assert!(!Role::User.manages_webhooks());
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ann@Example.com ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in ["", "ann", "@x", "a@", "a b@c", "a@b@c"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_hash_and_hide() {
        let t = ApiToken::generate();
        assert!(t.expose().starts_with("hrld_"));
        assert_eq!(t.expose().len(), 45);
        assert_eq!(t.hash(), ApiToken::parse(t.expose()).unwrap().hash());
        assert_eq!(t.hash().as_str().len(), 64);
        assert!(!format!("{t:?}").contains(t.expose()));
        assert!(ApiToken::parse("short").is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let p = Password::parse("correct horse battery").unwrap();
        let phc = p.hash();
        assert!(phc.starts_with("$argon2id$"));
        assert!(p.verify(&phc));
        assert!(!Password::parse("wrong horse battery").unwrap().verify(&phc));
        assert!(!format!("{p:?}").contains("horse"));
        assert!(Password::parse("short").is_err());
    }
}
