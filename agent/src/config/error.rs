//! Config errors that point at the offending spot: `FILE:LINE:COLUMN: message` plus a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column (in characters), as editors count them.
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n  hint: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message,
            self.hint
        )
    }
}

/// Every problem found in one file; nothing from the file is applied when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte spans into file positions for one source text.
pub struct Locator<'a> {
    file: &'a Path,
    src: &'a str,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Locator { file, src }
    }

    pub fn error(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Maps a TOML parse or type error to a located error with a hint for its class.
    pub fn from_toml(&self, err: &toml::de::Error) -> ConfigError {
        let message = err.message().trim().to_owned();
        let hint = if message.starts_with("unknown field") {
            "check the key's spelling and its table; examples/crosslink.toml lists every key"
        } else if message.starts_with("missing field") {
            "this key is required here; examples/crosslink.toml shows it"
        } else if message.starts_with("invalid type") {
            "the value has the wrong type: strings are quoted, numbers and booleans are not"
        } else if message.contains("duplicate key") {
            "each key may appear once per table"
        } else if message.contains("not a duration")
            || message.contains("not an IP prefix")
            || message.contains("host bits")
            || message.contains("not a community")
            || message.contains("not an aggregate")
            || message.contains("`le` must be")
            || message.starts_with("unknown variant")
            || message.starts_with("invalid value")
        {
            "fix the value as the message says"
        } else {
            "TOML syntax error: check quotes, brackets and `key = value` form"
        };
        let span = err.span().unwrap_or(0..0);
        let span = self.element_span(span.clone(), &message).unwrap_or(span);
        self.error(span, message, hint)
    }

    /// toml reports a bad array element at the array; our value errors quote the element
    /// as `` `value` ``, so find that element inside the array's span.
    fn element_span(&self, array: Range<usize>, message: &str) -> Option<Range<usize>> {
        let text = self.src.get(array.clone())?;
        if !text.starts_with('[') {
            return None;
        }
        let quoted = message.split('`').nth(1)?;
        let at = text.find(&format!("\"{quoted}\""))?;
        Some(array.start + at..array.start + at + quoted.len() + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        let loc = Locator::new(Path::new("f.toml"), src);
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(6), (2, 1));
        // `=` after the two-byte `é` is the fourth character of line 2.
        let eq = src.find("= \"x").unwrap();
        assert_eq!(loc.position(eq), (2, 4));
    }

    #[test]
    fn display_is_file_line_column_then_hint() {
        let loc = Locator::new(Path::new("/etc/x.toml"), "a\nbc");
        let e = loc.error(3..4, "bad", "fix it");
        assert_eq!(e.to_string(), "/etc/x.toml:2:2: bad\n  hint: fix it");
    }
}
