//! The one rule for text a person types into a single-line field: no control characters.
//!
//! PostgreSQL cannot store U+0000 in text at all, and SQLite can; tabs, line breaks and other
//! control characters in a title or an email are never meant and break the pages that show
//! them. Refusing them here makes both backends answer alike (issue 19, item 12).

use super::Invalid;

/// Refuses `text` if it holds a control character, naming the field and the character.
pub fn single_line(field: &str, text: &str) -> Result<(), Invalid> {
    match text.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(Invalid::new(format!(
            "{field} contains the control character U+{:04X}, which Herald does not store",
            u32::from(c)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_named_and_refused() {
        assert!(single_line("the title", "Leave request ‏مرحبا 'OR 1=1; --").is_ok());
        let err = single_line("the title", "a\0b").unwrap_err();
        assert_eq!(
            err.0,
            "the title contains the control character U+0000, which Herald does not store"
        );
        for bad in ["tab\there", "line\nbreak", "del\u{7f}", "c1\u{85}"] {
            assert!(single_line("x", bad).is_err(), "{bad:?}");
        }
    }
}
