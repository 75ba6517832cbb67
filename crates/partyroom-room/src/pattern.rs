//! Room id patterns (`game-{id}`), spec section 2.3.

use std::fmt;

/// A compiled room id pattern: literal text with `{name}` placeholders.
///
/// A placeholder captures one or more characters of `[A-Za-z0-9_-]`; the whole id must match.
/// Unlike `@signe/room`, literal text is matched literally (no accidental regex meaning).
/// Placeholders are greedy from left to right, as in the original: `test-{foo}-{bar}` on
/// `test-a-b-c` gives `foo = "a-b"`, `bar = "c"`.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomPattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

/// Parameters captured from a room id, in pattern order.
pub type Params = Vec<(String, String)>;

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid room pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl RoomPattern {
    /// Compile a pattern.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: source.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| err("unclosed `{`"))? + open;
            let name = &rest[open + 1..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err("placeholder names are letters, digits and `_`"));
            }
            if matches!(parts.last(), Some(Part::Param(_))) {
                return Err(err("two placeholders need literal text between them"));
            }
            parts.push(Part::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err(err("empty pattern"));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Match a room id; `Some(params)` when it matches.
    pub fn matches(&self, id: &str) -> Option<Params> {
        let mut params = Vec::new();
        if match_parts(&self.parts, id, &mut params) {
            Some(params)
        } else {
            None
        }
    }
}

fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Backtracking match; a placeholder tries the longest capture first (greedy).
fn match_parts(parts: &[Part], input: &str, params: &mut Params) -> bool {
    match parts.split_first() {
        None => input.is_empty(),
        Some((Part::Literal(lit), rest)) => {
            input.starts_with(lit.as_str()) && match_parts(rest, &input[lit.len()..], params)
        }
        Some((Part::Param(name), rest)) => {
            let max = input
                .find(|c: char| !is_param_char(c))
                .unwrap_or(input.len());
            for end in (1..=max).rev() {
                params.push((name.clone(), input[..end].to_owned()));
                if match_parts(rest, &input[end..], params) {
                    return true;
                }
                params.pop();
            }
            false
        }
    }
}

impl fmt::Debug for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomPattern({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, id: &str) -> Option<Vec<(String, String)>> {
        RoomPattern::parse(p).unwrap().matches(id)
    }

    fn kv(pairs: &[(&str, &str)]) -> Option<Params> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn spec_table() {
        assert_eq!(m("game", "game"), kv(&[]));
        assert_eq!(m("game", "test"), None);
        assert_eq!(m("game-{id}", "game-123"), kv(&[("id", "123")]));
        assert_eq!(m("game-{id}", "game-abc-123"), kv(&[("id", "abc-123")]));
        assert_eq!(m("game-{id}", "game-"), None);
        assert_eq!(
            m("test-{foo}-{bar}", "test-abc-xyz"),
            kv(&[("foo", "abc"), ("bar", "xyz")])
        );
        assert_eq!(
            m("test-{foo}-{bar}", "test-a-b-c"),
            kv(&[("foo", "a-b"), ("bar", "c")])
        );
        assert_eq!(
            m("test_{foo}_{bar}", "test_abc_xyz"),
            kv(&[("foo", "abc"), ("bar", "xyz")])
        );
        assert_eq!(m("{roomId}", "a-Z_9"), kv(&[("roomId", "a-Z_9")]));
        assert_eq!(m("{roomId}", "a.b"), None);
        assert_eq!(m("{roomId}", ""), None);
        // Literal text is literal: `.` is not a regex wildcard here.
        assert_eq!(m("a.{x}", "abz"), None);
    }

    #[test]
    fn bad_patterns() {
        assert!(RoomPattern::parse("").is_err());
        assert!(RoomPattern::parse("a{").is_err());
        assert!(RoomPattern::parse("{a b}").is_err());
        assert!(RoomPattern::parse("{a}{b}").is_err());
    }
}
