//! Filter stage: which SIP messages are published (SIP_FILTER).
//!
//! The original agent's s-expression language, kept form for form (see
//! docs/filters.md): `request`, `response`, `(status 200 400-499)`,
//! `(method invite bye)`, `(hasheader "diversion")`, `(header "via" RE)`,
//! `(to RE)`, `(from RE)`, `(body RE)`, `(message RE)`, `(all ...)`,
//! `(any ...)`, `(not F)`. The empty filter publishes everything.
//!
//! Every regex is a regex-automata dense DFA searched unanchored over bytes,
//! so matching allocates nothing. The DFAs come from a blob ([`blob`]): one
//! compiled at start-up from SIP_FILTER, or one compiled on a host with
//! `sip-capture compile-filter` and loaded from FILTER_FILE, which is how a
//! firmware image built without the regex compiler carries its filter.
//!
//! What it does not do: change a message or extract anything from it beyond
//! the match.

pub mod blob;
mod parse;

use crate::sip::{Message, StartLine, same_header};
use regex_automata::Input;
use regex_automata::dfa::{Automaton, dense::DFA};

/// A node of the filter tree. Regexes are indexes into [`Filter::dfas`].
#[derive(Debug)]
enum Node {
    Request,
    Response,
    /// Inclusive ranges of status codes.
    Status(Vec<(u16, u16)>),
    /// Upper-case method names; a response's method is its CSeq method.
    Method(Vec<Box<[u8]>>),
    HasHeader(Box<str>),
    Header(Box<str>, usize),
    Body(usize),
    Message(usize),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

/// A compiled SIP_FILTER.
pub struct Filter {
    expression: String,
    /// `None`: the empty filter.
    root: Option<Node>,
    dfas: Vec<DFA<&'static [u32]>>,
}

impl core::fmt::Debug for Filter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Filter({:?})", self.expression)
    }
}

impl Filter {
    /// Compile filter text; its DFAs may take at most `max_dfa_bytes`.
    pub fn compile(expression: &str, max_dfa_bytes: usize) -> Result<Filter, String> {
        let parsed = parse::parse(expression)?;
        if parsed.regexes.is_empty() {
            return Ok(Filter {
                expression: expression.to_string(),
                root: parsed.root,
                dfas: Vec::new(),
            });
        }
        #[cfg(feature = "filter-compiler")]
        {
            let bytes = blob::compile(expression, &parsed.regexes, max_dfa_bytes, blob::Endian::NATIVE)?;
            Filter::from_blob(blob::aligned(&bytes))
        }
        #[cfg(not(feature = "filter-compiler"))]
        {
            let _ = max_dfa_bytes;
            Err("this build has no regex compiler (feature filter-compiler); \
                 compile the filter on a host with `sip-capture compile-filter` and load it with FILTER_FILE"
                .into())
        }
    }

    /// Load a filter blob (see [`blob`]) that lives for the rest of the program.
    pub fn from_blob(bytes: &'static [u8]) -> Result<Filter, String> {
        let loaded = blob::load(bytes)?;
        let parsed = parse::parse(loaded.expression)
            .map_err(|e| format!("filter file expression {:?}: {e}", loaded.expression))?;
        if parsed.regexes.len() != loaded.dfas.len() {
            return Err(format!(
                "filter file holds {} DFAs for the {} regexes of its expression",
                loaded.dfas.len(),
                parsed.regexes.len()
            ));
        }
        Ok(Filter {
            expression: loaded.expression.to_string(),
            root: parsed.root,
            dfas: loaded.dfas,
        })
    }

    /// Read and load a filter file written by `sip-capture compile-filter`.
    pub fn load_file(path: &std::path::Path) -> Result<Filter, String> {
        Filter::from_blob(blob::read_aligned(path).map_err(|e| format!("cannot read: {e}"))?)
    }

    /// The filter's source text.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Whether the filter selects `message`.
    pub fn matches(&self, message: &Message<'_>) -> bool {
        self.root.as_ref().is_none_or(|root| self.eval(root, message))
    }

    fn eval(&self, node: &Node, m: &Message<'_>) -> bool {
        match node {
            Node::Request => matches!(m.start_line(), StartLine::Request { .. }),
            Node::Response => matches!(m.start_line(), StartLine::Response { .. }),
            Node::Status(ranges) => match m.start_line() {
                StartLine::Response { code, .. } => {
                    ranges.iter().any(|&(low, high)| (low..=high).contains(&code))
                }
                StartLine::Request { .. } => false,
            },
            Node::Method(methods) => method_of(m)
                .is_some_and(|method| methods.iter().any(|wanted| wanted.eq_ignore_ascii_case(method))),
            Node::HasHeader(name) => m.headers().any(|h| same_header(h.name, name.as_bytes())),
            Node::Header(name, re) => m.header_values(name.as_bytes()).any(|v| self.search(*re, v)),
            Node::Body(re) => self.search(*re, m.body()),
            Node::Message(re) => {
                let raw = m.raw();
                self.search(*re, &raw[..raw.len() - m.body().len()]) || self.search(*re, m.body())
            }
            Node::All(nodes) => nodes.iter().all(|n| self.eval(n, m)),
            Node::Any(nodes) => nodes.iter().any(|n| self.eval(n, m)),
            Node::Not(node) => !self.eval(node, m),
        }
    }

    /// Unanchored search of regex `re` in `haystack`, stopping at the first
    /// match.
    fn search(&self, re: usize, haystack: &[u8]) -> bool {
        self.dfas[re]
            .try_search_fwd(&Input::new(haystack).earliest(true))
            .is_ok_and(|found| found.is_some())
    }
}

/// The method of a request, or of the request a response answers (from its
/// CSeq, as the original agent did): `(all (method invite) (status 200))`
/// selects accepted INVITEs.
fn method_of<'a>(m: &Message<'a>) -> Option<&'a [u8]> {
    match m.start_line() {
        StartLine::Request { method, .. } => Some(method),
        StartLine::Response { .. } => {
            let cseq = m.header_values(b"CSeq").next()?;
            cseq.split(|b| b.is_ascii_whitespace())
                .filter(|t| !t.is_empty())
                .nth(1)
        }
    }
}

/// Compile filter text to a blob in byte order `endian`, for FILTER_FILE.
#[cfg(feature = "filter-compiler")]
pub fn compile_blob(expression: &str, max_dfa_bytes: usize, endian: blob::Endian) -> Result<Vec<u8>, String> {
    let parsed = parse::parse(expression)?;
    blob::compile(expression, &parsed.regexes, max_dfa_bytes, endian)
}
