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
    /// The bytes of the source it is about, for a snippet under the message.
    pub span: Option<Range<usize>>,
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

/// `span` cut to its first line, with at least one character (a whole table's span would
/// underline the table; the spot is where it starts).
fn one_line(src: &str, span: Range<usize>) -> (usize, usize) {
    let mut start = span.start.min(src.len().saturating_sub(1));
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
    let end = span.end.clamp(start, line_end);
    let end = if end > start {
        end
    } else {
        src[start..]
            .chars()
            .next()
            .map_or(start, |c| start + c.len_utf8())
    };
    (start, end)
}

impl ConfigErrors {
    /// As a compiler shows its errors: each with the source line it is about and a caret
    /// under the spot, then the hint; `src` is the file's text (without it, or for an error
    /// with no position in it, the one-line form). Colour only for a terminal.
    pub fn render(&self, src: Option<&str>, color: bool) -> String {
        use annotate_snippets::{Level, Renderer, Snippet};
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = String::new();
        for e in &self.0 {
            let (Some(src), Some(span)) = (src, e.span.clone()) else {
                out.push_str(&format!("{e}\n"));
                continue;
            };
            let (start, end) = one_line(src, span);
            let origin = format!("{}", e.file.display());
            let message = Level::Error.title(&e.message).snippet(
                Snippet::source(src)
                    .origin(&origin)
                    .fold(true)
                    .annotation(Level::Error.span(start..end)),
            );
            let message = message.footer(Level::Help.title(&e.hint));
            out.push_str(&format!("{}\n", renderer.render(message)));
        }
        out
    }
}

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
            span: Some(span),
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
