//! `Subject` and `Pattern`: validated names and the NATS token rules for matching them.
//!
//! A subject is one or more non-empty tokens joined by `.`; a token holds no whitespace, no
//! control character, and neither `*` nor `>`. A pattern uses `*` for exactly one token and
//! `>` (last token only) for one or more trailing tokens, exactly as NATS does, so a pattern
//! means the same in-process and on the wire.
//!
//! Seed 002 used shell-style (fnmatch) patterns, where `*` crosses dots and `*` alone matches
//! everything. Those are available as an explicit opt-in, [`Pattern::glob`]; seed 002's `*`
//! is `>` in the token language.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What was wrong with a subject or a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// The string was empty.
    #[error("empty subject")]
    Empty,
    /// Two dots in a row, or a leading or trailing dot.
    #[error("{input:?}: empty token at position {position}")]
    EmptyToken {
        /// The rejected input.
        input: String,
        /// Index of the empty token (0-based).
        position: usize,
    },
    /// A character that no subject may hold (whitespace, a control character).
    #[error("{input:?}: invalid character {found:?} (subjects hold no whitespace or control characters)")]
    InvalidChar {
        /// The rejected input.
        input: String,
        /// The offending character.
        found: char,
    },
    /// A wildcard in a subject, or a wildcard used wrongly in a pattern.
    #[error("{input:?}: {reason}")]
    Wildcard {
        /// The rejected input.
        input: String,
        /// What was wrong.
        reason: &'static str,
    },
}

fn check_char(input: &str, c: char) -> Result<(), SubjectError> {
    if c.is_whitespace() || c.is_control() {
        return Err(SubjectError::InvalidChar {
            input: input.to_owned(),
            found: c,
        });
    }
    Ok(())
}

fn tokens_of(input: &str) -> Result<std::str::Split<'_, char>, SubjectError> {
    if input.is_empty() {
        return Err(SubjectError::Empty);
    }
    for (position, token) in input.split('.').enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken {
                input: input.to_owned(),
                position,
            });
        }
    }
    Ok(input.split('.'))
}

/// A validated, concrete subject such as `trivia.started`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

impl Subject {
    /// Validates `input` as a subject.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] naming the input and what is wrong: empty, an empty token, whitespace
    /// or a control character, or a wildcard (`*`, `>`).
    ///
    /// # Examples
    ///
    /// ```
    /// use herald::Subject;
    /// assert!(Subject::new("trivia.started").is_ok());
    /// assert!(Subject::new("trivia..started").is_err());
    /// assert!(Subject::new("trivia.*").is_err());
    /// ```
    pub fn new(input: &str) -> Result<Self, SubjectError> {
        if input.is_empty() {
            return Err(SubjectError::Empty);
        }
        // One pass over the bytes; only non-ASCII text takes the slower char checks.
        let (mut position, mut token_len) = (0usize, 0usize);
        for &b in input.as_bytes() {
            match b {
                b'.' => {
                    if token_len == 0 {
                        return Err(SubjectError::EmptyToken {
                            input: input.to_owned(),
                            position,
                        });
                    }
                    position += 1;
                    token_len = 0;
                }
                b'*' | b'>' => {
                    return Err(SubjectError::Wildcard {
                        input: input.to_owned(),
                        reason: "a subject holds no wildcard (`*` or `>`); use a Pattern to match",
                    })
                }
                0x21..=0x7e | 0x80..=0xff => token_len += 1,
                other => {
                    return Err(SubjectError::InvalidChar {
                        input: input.to_owned(),
                        found: char::from(other),
                    })
                }
            }
        }
        if token_len == 0 {
            return Err(SubjectError::EmptyToken {
                input: input.to_owned(),
                position,
            });
        }
        if !input.is_ascii() {
            for c in input.chars() {
                check_char(input, c)?;
            }
        }
        Ok(Subject(Arc::from(input)))
    }

    /// The subject's shared text (no copy).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The subject as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The last token (`started` for `trivia.started`): the default event type.
    pub fn last_token(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({:?})", &*self.0)
    }
}

impl FromStr for Subject {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Subject::new(s)
    }
}

impl TryFrom<&str> for Subject {
    type Error = SubjectError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Subject::new(s)
    }
}

impl TryFrom<String> for Subject {
    type Error = SubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Subject::new(&s)
    }
}

impl TryFrom<&String> for Subject {
    type Error = SubjectError;
    fn try_from(s: &String) -> Result<Self, Self::Error> {
        Subject::new(s)
    }
}

impl TryFrom<&Subject> for Subject {
    type Error = SubjectError;
    fn try_from(s: &Subject) -> Result<Self, Self::Error> {
        Ok(s.clone())
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Subject::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One token of a token pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token<'a> {
    /// A literal token that must be equal.
    Literal(&'a str),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens (last position only).
    Rest,
}

impl<'a> Token<'a> {
    fn of(raw: &'a str) -> Self {
        match raw {
            "*" => Token::One,
            ">" => Token::Rest,
            literal => Token::Literal(literal),
        }
    }
}

/// A subscription pattern: NATS token rules by default, shell-style glob as an opt-in.
///
/// # Examples
///
/// ```
/// use herald::{Pattern, Subject};
/// let p = Pattern::new("trivia.*").unwrap();
/// assert!(p.matches(&Subject::new("trivia.started").unwrap()));
/// assert!(!p.matches(&Subject::new("trivia.round.started").unwrap()));
/// let all = Pattern::new(">").unwrap();
/// assert!(all.matches(&Subject::new("trivia.round.started").unwrap()));
/// let glob = Pattern::glob("trivia*").unwrap();
/// assert!(glob.matches(&Subject::new("trivia.round.started").unwrap()));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    // Tokens are read off the text on demand: a pattern costs one allocation.
    text: Arc<str>,
    glob: bool,
}

impl Pattern {
    /// Parses a token pattern (`*` one token, `>` the rest).
    ///
    /// # Errors
    ///
    /// [`SubjectError`] for an empty pattern or token, whitespace, `>` anywhere but alone in
    /// the last token, `*` inside a longer token, or the glob characters `?`, `[`, `]`
    /// (ask for [`Pattern::glob`] explicitly if that is what you meant).
    pub fn new(input: &str) -> Result<Self, SubjectError> {
        let mut tokens = tokens_of(input)?.peekable();
        while let Some(token) = tokens.next() {
            let last = tokens.peek().is_none();
            match token {
                "*" => {}
                ">" if last => {}
                ">" => {
                    return Err(SubjectError::Wildcard {
                        input: input.to_owned(),
                        reason: "`>` may only be the last token",
                    })
                }
                literal => {
                    for c in literal.chars() {
                        check_char(input, c)?;
                        let reason = match c {
                            '*' | '>' => "a wildcard must be a whole token (`a.*`, not `a*`); use Pattern::glob for shell-style patterns",
                            '?' | '[' | ']' => "`?` and `[..]` are glob syntax; use Pattern::glob to opt in",
                            _ => continue,
                        };
                        return Err(SubjectError::Wildcard {
                            input: input.to_owned(),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(Pattern {
            text: Arc::from(input),
            glob: false,
        })
    }

    /// A shell-style (fnmatch) pattern, as seed 002 wrote them: `*` matches any run of
    /// characters including dots, `?` one character, `[abc]`/`[a-z]`/`[!a]` a class.
    ///
    /// Glob patterns are matched one by one on each publish (they cannot be indexed), so
    /// prefer token patterns on a hot path.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] for an empty pattern, whitespace or control characters, or an
    /// unclosed `[`.
    pub fn glob(input: &str) -> Result<Self, SubjectError> {
        if input.is_empty() {
            return Err(SubjectError::Empty);
        }
        let mut chars = input.chars().peekable();
        while let Some(c) = chars.next() {
            check_char(input, c)?;
            if c == '[' && !chars.by_ref().any(|c| c == ']') {
                return Err(SubjectError::Wildcard {
                    input: input.to_owned(),
                    reason: "unclosed `[` in glob pattern",
                });
            }
        }
        Ok(Pattern {
            text: Arc::from(input),
            glob: true,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is an explicit glob pattern.
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    /// The tokens of a token pattern; `None` for a glob.
    pub fn tokens(&self) -> Option<impl Iterator<Item = Token<'_>> + Clone> {
        (!self.glob).then(|| self.text.split('.').map(Token::of))
    }

    /// Whether `subject` matches this pattern.
    pub fn matches(&self, subject: &Subject) -> bool {
        match self.tokens() {
            None => glob_match(self.text.as_bytes(), subject.as_str().as_bytes()),
            Some(tokens) => {
                let mut subject_tokens = subject.tokens();
                for token in tokens {
                    match token {
                        Token::Rest => return subject_tokens.next().is_some(),
                        Token::One => {
                            if subject_tokens.next().is_none() {
                                return false;
                            }
                        }
                        Token::Literal(l) => {
                            if subject_tokens.next() != Some(l) {
                                return false;
                            }
                        }
                    }
                }
                subject_tokens.next().is_none()
            }
        }
    }
}

/// fnmatch-style matching over bytes (ASCII classes; multi-byte characters compare bytewise).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; returns whether it
/// matched and the index after the closing `]`.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() && (first || pattern[i] != b']') {
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if pattern[i] <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if pattern[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    if i >= pattern.len() {
        return None;
    }
    Some((matched != negate, i + 1))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_glob() {
            write!(f, "Pattern::glob({:?})", &*self.text)
        } else {
            write!(f, "Pattern({:?})", &*self.text)
        }
    }
}

impl FromStr for Pattern {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::new(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = SubjectError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Pattern::new(s)
    }
}

impl TryFrom<String> for Pattern {
    type Error = SubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Pattern::new(&s)
    }
}

impl TryFrom<&String> for Pattern {
    type Error = SubjectError;
    fn try_from(s: &String) -> Result<Self, Self::Error> {
        Pattern::new(s)
    }
}

/// Anything that names a pattern: a string (parsed with the token rules), a [`Pattern`]
/// (a glob stays a glob), or a [`Subject`] (matches only itself).
pub trait IntoPattern {
    /// The conversion.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when a string is not a valid token pattern.
    fn into_pattern(self) -> Result<Pattern, SubjectError>;
}

impl IntoPattern for &str {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Pattern::new(self)
    }
}

impl IntoPattern for String {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Pattern::new(&self)
    }
}

impl IntoPattern for &String {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Pattern::new(self)
    }
}

impl IntoPattern for Pattern {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Ok(self)
    }
}

impl IntoPattern for &Pattern {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Ok(self.clone())
    }
}

impl IntoPattern for Subject {
    fn into_pattern(self) -> Result<Pattern, SubjectError> {
        Ok(Pattern::from(self))
    }
}

impl From<Subject> for Pattern {
    fn from(s: Subject) -> Self {
        Pattern {
            text: s.0,
            glob: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subject {
        Subject::new(x).expect("valid subject")
    }

    #[test]
    fn glob_star_crosses_dots_and_classes_work() {
        let g = Pattern::glob("tri?ia.[a-s]*").expect("glob");
        assert!(g.matches(&s("trivia.started.now")));
        assert!(!g.matches(&s("trivia.x")));
        assert!(Pattern::glob("*").expect("glob").matches(&s("a.b.c")));
        assert!(Pattern::glob("[!a]b").expect("glob").matches(&s("bb")));
        assert!(!Pattern::glob("[!a]b").expect("glob").matches(&s("ab")));
    }
}
