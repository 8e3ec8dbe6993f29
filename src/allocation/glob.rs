//! Glob patterns for rule matchers: `*` and `?`, case-insensitive, anchored at both ends.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A case-insensitive glob: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!x]`;
/// `\` escapes the next character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    toks: Vec<Tok>,
}

impl Glob {
    pub fn new(p: &str) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut it = p.chars().flat_map(char::to_lowercase).peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::Any),
                '\\' => match it.next() {
                    Some(e) => toks.push(Tok::Lit(e)),
                    None => return Err(format!("bad pattern '{p}': it ends with an escaping '\\'")),
                },
                '[' => {
                    let negated = it.next_if(|c| *c == '!' || *c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = it.next() {
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if it.peek() == Some(&'-') {
                            it.next();
                            match it.next() {
                                Some(']') => {
                                    ranges.push((c, c));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some(hi) if hi >= c => ranges.push((c, hi)),
                                Some(hi) => {
                                    return Err(format!("bad pattern '{p}': range {c}-{hi} is reversed"));
                                }
                                None => break,
                            }
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    if !closed {
                        return Err(format!("bad pattern '{p}': '[' has no closing ']'"));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob { pattern: p.to_string(), toks })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, s: &str) -> bool {
        let text: Vec<char> = s.chars().flat_map(char::to_lowercase).collect();
        // Iterative wildcard matching with one backtrack point per star.
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            let ok = match self.toks.get(pi) {
                Some(Tok::Lit(c)) => *c == text[ti],
                Some(Tok::Any) => true,
                Some(Tok::Class { negated, ranges }) => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&text[ti])) != *negated
                }
                Some(Tok::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                None => false,
            };
            if ok {
                ti += 1;
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        self.toks[pi..].iter().all(|t| *t == Tok::Star)
    }
}
