//! `Subject` and `SubjectError`: validated dot-separated names.
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

impl SubjectError {
    /// The rejected input (empty for [`SubjectError::Empty`]).
    pub fn input(&self) -> &str {
        match self {
            SubjectError::Empty => "",
            SubjectError::EmptyToken { input, .. }
            | SubjectError::InvalidChar { input, .. }
            | SubjectError::Wildcard { input, .. } => input,
        }
    }
}

pub(crate) fn check_char(input: &str, c: char) -> Result<(), SubjectError> {
    if c.is_whitespace() || c.is_control() {
        return Err(SubjectError::InvalidChar {
            input: input.to_owned(),
            found: c,
        });
    }
    Ok(())
}

pub(crate) fn tokens_of(input: &str) -> Result<std::str::Split<'_, char>, SubjectError> {
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
pub struct Subject(pub(crate) Arc<str>);

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

    /// The shared text itself: two subjects cloned from one compare equal by pointer.
    pub(crate) fn arc(&self) -> &Arc<str> {
        &self.0
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
