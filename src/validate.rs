//! Checks on text a client sends, applied at the edge (HTTP and socket alike) before anything
//! reaches the database. PostgreSQL refuses NUL in `text`, and the other C0 control characters
//! have no place in names, titles or messages; refusing them here keeps one client's bad input
//! from reaching a group commit that other clients' sends share.

use crate::error::{AppError, AppResult};

/// True for the characters a client's text may not hold: C0 controls other than tab, newline
/// and carriage return (so text pasted with CRLF line ends is accepted).
fn is_forbidden(c: char) -> bool {
    c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r') && c != '\u{7f}'
}

/// Refuses `value` with `invalid_input` naming `field` when it holds a forbidden character.
pub fn text(field: &str, value: &str) -> AppResult<()> {
    match value.char_indices().find(|&(_, c)| is_forbidden(c)) {
        Some((at, c)) => Err(AppError::invalid(format!(
            "{field}: control character U+{:04X} at byte {at} is not allowed",
            c as u32
        ))),
        None => Ok(()),
    }
}

/// A group's title, trimmed: 1 to 100 characters of allowed text.
pub fn group_title(title: &str) -> AppResult<&str> {
    let title = title.trim();
    text("title", title)?;
    if title.is_empty() || title.chars().count() > 100 {
        return Err(AppError::invalid("title: 1 to 100 characters"));
    }
    Ok(title)
}

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn nul_and_c0_controls_are_refused_but_tab_newline_and_cr_pass() {
        assert!(text("body", "a\u{0}b").is_err());
        assert!(text("body", "\u{1b}[31m").is_err());
        assert!(text("body", "line\r\nnext\tcol").is_ok());
        assert!(text("body", "emoji 🎉 and ü").is_ok());
    }
}
