//! `Pattern`: what a subscription matches, by NATS token rules (`*` one token, `>` the
//! rest) or, as an explicit opt-in, a shell-style glob; and `IntoPattern`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::glob::glob_match;
use super::subject::{check_char, tokens_of, Subject, SubjectError};

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
