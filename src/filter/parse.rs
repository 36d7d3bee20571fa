//! The filter language's parser: s-expression text to a [`Node`] tree.
//!
//! Whitespace separates tokens; strings are in double quotes with no escape
//! character; bare words are function names, method names or numbers. Every
//! error names the place (`column 17: ...`, or `line 2, column 5: ...` for a
//! filter written over several lines).
//!
//! What it does not do: compile regular expressions. Each regex is collected,
//! in order of appearance, and referred to by its index; `blob` turns them
//! into DFAs.

use super::Node;

/// The functions of the language, for error messages and suggestions.
const FUNCTIONS: &[&str] = &[
    "request",
    "response",
    "status",
    "method",
    "methods",
    "hasheader",
    "header",
    "to",
    "from",
    "body",
    "message",
    "all",
    "any",
    "not",
];

/// Deeper nesting than this is refused, so a hostile filter cannot exhaust
/// the stack.
const MAX_DEPTH: usize = 64;

/// A parsed filter: its tree (`None` for the empty filter) and its regexes.
#[derive(Debug)]
pub struct Parsed {
    pub root: Option<Node>,
    pub regexes: Vec<String>,
}

#[derive(Debug)]
enum Sexp<'a> {
    List(Vec<Sexp<'a>>, usize),
    Word(&'a str, usize),
    Str(&'a str, usize),
}

impl Sexp<'_> {
    fn at(&self) -> usize {
        match self {
            Sexp::List(_, at) | Sexp::Word(_, at) | Sexp::Str(_, at) => *at,
        }
    }

    fn describe(&self) -> String {
        match self {
            Sexp::List(..) => "a (...) expression".into(),
            Sexp::Word(w, _) => format!("'{w}'"),
            Sexp::Str(s, _) => format!("\"{s}\""),
        }
    }
}

/// Parse filter `text`.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut parser = Parser { text, pos: 0 };
    let mut compiler = Compiler {
        text,
        regexes: Vec::new(),
    };
    parser.skip_space();
    if parser.pos == text.len() {
        return Ok(Parsed {
            root: None,
            regexes: Vec::new(),
        });
    }
    let sexp = parser.sexp(0)?;
    parser.skip_space();
    if parser.pos < text.len() {
        return Err(parser.error(
            parser.pos,
            "unexpected text after the filter expression; combine filters with (all ...) or (any ...)",
        ));
    }
    let root = compiler.filter(&sexp)?;
    Ok(Parsed {
        root: Some(root),
        regexes: compiler.regexes,
    })
}

/// `column N` or `line L, column N` for byte offset `at` of `text`.
fn place(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    if text.contains('\n') {
        format!("line {line}, column {column}")
    } else {
        format!("column {column}")
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, at: usize, message: &str) -> String {
        format!("{}: {message}", place(self.text, at))
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn sexp(&mut self, depth: usize) -> Result<Sexp<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(self.error(self.pos, &format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.skip_space();
        let start = self.pos;
        let rest = &self.text[start..];
        match rest.chars().next() {
            None => Err(self.error(start, "unexpected end of filter; a ')' is missing")),
            Some('(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.text[self.pos..].chars().next() {
                        None => {
                            return Err(self.error(start, "unbalanced parentheses: this '(' is never closed"));
                        }
                        Some(')') => {
                            self.pos += 1;
                            return Ok(Sexp::List(items, start));
                        }
                        Some(_) => items.push(self.sexp(depth + 1)?),
                    }
                }
            }
            Some(')') => Err(self.error(start, "unbalanced parentheses: ')' without a matching '('")),
            Some('"') => {
                let body = &rest[1..];
                let end = body
                    .find('"')
                    .ok_or_else(|| self.error(start, "unbalanced quotes: this '\"' is never closed"))?;
                self.pos += end + 2;
                Ok(Sexp::Str(&body[..end], start))
            }
            Some(_) => {
                let len = rest
                    .find(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '"')
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(Sexp::Word(&rest[..len], start))
            }
        }
    }
}

struct Compiler<'a> {
    text: &'a str,
    regexes: Vec<String>,
}

impl Compiler<'_> {
    fn error(&self, at: usize, message: &str) -> String {
        format!("{}: {message}", place(self.text, at))
    }

    /// A filter expression: a bare `request`/`response` or a `(function ...)`.
    fn filter(&mut self, sexp: &Sexp<'_>) -> Result<Node, String> {
        let (name, args, at) = match sexp {
            Sexp::Word(word, at) => (*word, &[][..], *at),
            Sexp::List(items, at) => match items.split_first() {
                None => return Err(self.error(*at, "empty expression '()'")),
                Some((Sexp::Word(word, at), args)) => (*word, args, *at),
                Some((other, _)) => {
                    return Err(self.error(
                        other.at(),
                        &format!("expected a function name, found {}", other.describe()),
                    ));
                }
            },
            Sexp::Str(..) => {
                return Err(self.error(
                    sexp.at(),
                    &format!("expected a filter, found the string {}", sexp.describe()),
                ));
            }
        };
        let lower = name.to_ascii_lowercase();
        let bare = matches!(sexp, Sexp::Word(..));
        let count = |n: usize, what: &str| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else if bare {
                Err(self.error(at, &format!("'{name}' takes {what}: write it as ({name} ...)")))
            } else {
                Err(self.error(at, &format!("'{name}' takes {what}, got {}", args.len())))
            }
        };
        let at_least_one = |what: &str| -> Result<(), String> {
            if args.is_empty() {
                Err(self.error(at, &format!("'{name}' takes one or more {what}")))
            } else {
                Ok(())
            }
        };
        Ok(match lower.as_str() {
            "request" => {
                count(0, "no arguments")?;
                Node::Request
            }
            "response" => {
                count(0, "no arguments")?;
                Node::Response
            }
            "status" => {
                at_least_one("status codes or ranges such as 400-499")?;
                Node::Status(args.iter().map(|a| self.status(a)).collect::<Result<_, _>>()?)
            }
            "method" | "methods" => {
                at_least_one("method names")?;
                Node::Method(args.iter().map(|a| self.method(a)).collect::<Result<_, _>>()?)
            }
            "hasheader" => {
                count(1, "one header name")?;
                Node::HasHeader(self.string(&args[0], "a header name")?.into())
            }
            "header" => {
                count(2, "a header name and a regular expression")?;
                let header = self.string(&args[0], "a header name")?.into();
                Node::Header(header, self.regex(&args[1])?)
            }
            "to" | "from" => {
                count(1, "one regular expression")?;
                Node::Header(lower.clone().into(), self.regex(&args[0])?)
            }
            "body" => {
                count(1, "one regular expression")?;
                Node::Body(self.regex(&args[0])?)
            }
            "message" => {
                count(1, "one regular expression")?;
                Node::Message(self.regex(&args[0])?)
            }
            "all" | "any" => {
                at_least_one("filters")?;
                let subs = args.iter().map(|a| self.filter(a)).collect::<Result<_, _>>()?;
                if lower == "all" {
                    Node::All(subs)
                } else {
                    Node::Any(subs)
                }
            }
            "not" => {
                count(1, "one filter")?;
                Node::Not(Box::new(self.filter(&args[0])?))
            }
            _ => {
                let hint = suggestion(&lower)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                return Err(self.error(at, &format!("unknown function '{name}'{hint}")));
            }
        })
    }

    fn string<'s>(&self, sexp: &Sexp<'s>, what: &str) -> Result<&'s str, String> {
        match sexp {
            Sexp::Str(s, _) => Ok(s),
            other => Err(self.error(
                other.at(),
                &format!("expected {what} in double quotes, found {}", other.describe()),
            )),
        }
    }

    fn regex(&mut self, sexp: &Sexp<'_>) -> Result<usize, String> {
        let pattern = self.string(sexp, "a regular expression")?;
        self.regexes.push(pattern.to_string());
        Ok(self.regexes.len() - 1)
    }

    /// A status code `200` or range `400-499`, as an inclusive range.
    fn status(&self, sexp: &Sexp<'_>) -> Result<(u16, u16), String> {
        let bad = || {
            self.error(
                sexp.at(),
                &format!(
                    "expected a status code (100-699) or a range such as 400-499, found {}",
                    sexp.describe()
                ),
            )
        };
        let Sexp::Word(word, _) = sexp else {
            return Err(bad());
        };
        let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=699).contains(c));
        let (low, high) = match word.split_once('-') {
            Some((low, high)) => (code(low).ok_or_else(bad)?, code(high).ok_or_else(bad)?),
            None => {
                let c = code(word).ok_or_else(bad)?;
                (c, c)
            }
        };
        if low > high {
            return Err(self.error(sexp.at(), &format!("empty status range {word}")));
        }
        Ok((low, high))
    }

    /// A method name, bare or quoted, kept upper-case.
    fn method(&self, sexp: &Sexp<'_>) -> Result<Box<[u8]>, String> {
        let (Sexp::Word(name, _) | Sexp::Str(name, _)) = sexp else {
            return Err(self.error(
                sexp.at(),
                &format!("expected a method name, found {}", sexp.describe()),
            ));
        };
        if name.is_empty() || !name.bytes().all(crate::sip::is_token_char) || name.parse::<u64>().is_ok() {
            return Err(self.error(
                sexp.at(),
                &format!("'{name}' is not a SIP method name (a token such as INVITE)"),
            ));
        }
        Ok(name.to_ascii_uppercase().into_bytes().into_boxed_slice())
    }
}

/// The closest function name, for "did you mean": one edit per three
/// letters, at least one.
fn suggestion(name: &str) -> Option<&'static str> {
    let allowed = (name.chars().count() / 3).max(1);
    FUNCTIONS
        .iter()
        .map(|f| (edit_distance(name, f), *f))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_point_at_the_place() {
        assert_eq!(
            err("(all request (metod invite))"),
            "column 15: unknown function 'metod' (did you mean 'method'?)"
        );
        assert_eq!(
            err("(to \"blah)"),
            "column 5: unbalanced quotes: this '\"' is never closed"
        );
        assert_eq!(
            err("(status 100 200"),
            "column 1: unbalanced parentheses: this '(' is never closed"
        );
        assert_eq!(
            err(")"),
            "column 1: unbalanced parentheses: ')' without a matching '('"
        );
        assert_eq!(err("(any\n  doit)"), "line 2, column 3: unknown function 'doit'");
    }

    #[test]
    fn the_originals_parse_failures() {
        for bad in [
            "()",
            "doit",
            "response request",
            "(not ())",
            "hasheader blah",
            "(request blah)",
            "(response blah)",
            "(100)",
            "body foo",
            "(body \"foo\" \"bar\")",
            "(body 100)",
            "not",
            "(not)",
            "(not (any response) request)",
            "(not 100)",
            "(not body foo)",
            "(any)",
            "(any doit)",
            "(all body)",
            "(all)",
            "(methods 100)",
            "status",
            "(status foo)",
            "(to)",
            "(to 18005551212)",
            "(from)",
            "(from bob)",
            "(hasheader 100)",
            "(hasheader \"foo\" \"bar\")",
            "header",
            "(header \"foo\")",
            "(header \"foo\" \"bar\" \"baz\")",
            "(header 100 \"alice\")",
            "(header \"via\" 100)",
            "(message \"[\" \"that\")",
            "(status 499-400)",
            "(status 99)",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn regexes_are_collected_in_order() {
        let parsed =
            parse("(all (to \"a\") (any (body \"b\") (header \"via\" \"c\")) (message \"d\"))").unwrap();
        assert_eq!(parsed.regexes, ["a", "b", "c", "d"]);
    }

    #[test]
    fn empty_filter() {
        assert!(parse("  \n ").unwrap().root.is_none());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "(not ".repeat(100) + "request" + &")".repeat(100);
        assert!(err(&deep).contains("nested deeper"));
    }
}
