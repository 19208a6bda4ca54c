//! Seed 002's shell-style (fnmatch) matching, behind `Pattern::glob`: `*` crosses dots,
//! `?` one character, `[..]` a class.

/// fnmatch-style matching over bytes (ASCII classes; multi-byte characters compare bytewise).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use crate::message::pattern::Pattern;
    use crate::message::subject::Subject;

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
