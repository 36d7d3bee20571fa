//! Compiled filters: the regexes of a filter as regex-automata dense DFAs,
//! in a blob that an image can carry and the agent loads zero-copy.
//!
//! Layout (integers in the blob's byte order; every section 4-byte aligned):
//!
//! ```text
//!  0  magic "SIPFILT\0"
//!  8  u32 0x0A0B0C0D        byte-order mark
//! 12  u32 format version
//! 16  [u8; 32]             SHA-256 of everything from offset 48 on
//! 48  u32 n, n bytes        the filter expression (UTF-8), padded
//!     u32 count             number of DFAs, one per regex in order
//!     u32 n, n bytes        each DFA as regex-automata serializes it, padded
//! ```
//!
//! The checksum makes an edited expression (or a damaged file) a clear
//! error instead of a filter whose DFAs belong to other regexes.
//!
//! What it does not do: parse the expression; `filter` does that and checks
//! that the blob holds one DFA per regex.

use regex_automata::dfa::dense::DFA;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"SIPFILT\0";
const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;
/// Bump when the layout changes.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 48;

/// Byte order of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    pub const NATIVE: Endian = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };

    pub fn name(self) -> &'static str {
        match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        }
    }

    #[cfg(feature = "filter-compiler")]
    fn u32_bytes(self, n: u32) -> [u8; 4] {
        match self {
            Endian::Little => n.to_le_bytes(),
            Endian::Big => n.to_be_bytes(),
        }
    }
}

/// Compile each regex to a DFA and write the blob in byte order `endian`.
/// The DFAs together may take at most `max_dfa_bytes`.
#[cfg(feature = "filter-compiler")]
pub fn compile(
    expression: &str,
    regexes: &[String],
    max_dfa_bytes: usize,
    endian: Endian,
) -> Result<Vec<u8>, String> {
    use regex_automata::{nfa::thompson, util::syntax};

    let mut body = Vec::new();
    push_section(&mut body, expression.as_bytes(), endian);
    body.extend_from_slice(&endian.u32_bytes(regexes.len() as u32));
    let mut total = 0usize;
    for pattern in regexes {
        let left = max_dfa_bytes.saturating_sub(total);
        let too_big = || {
            format!(
                "regex \"{pattern}\": its DFA would exceed the FILTER_MAX_DFA_BYTES limit of {max_dfa_bytes} bytes for all regexes together"
            )
        };
        let dfa = DFA::builder()
            // Byte mode: messages may hold any bytes, and Unicode classes
            // would triple the DFA of every `.*`.
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                DFA::config()
                    .minimize(true)
                    .dfa_size_limit(Some(left))
                    .determinize_size_limit(Some(left.max(1 << 20))),
            )
            .build(pattern)
            .map_err(|e| {
                if e.is_size_limit_exceeded() {
                    too_big()
                } else {
                    format!("regex \"{pattern}\": {}", innermost_message(&e))
                }
            })?;
        let len = dfa.write_to_len();
        total += len;
        if total > max_dfa_bytes {
            return Err(too_big());
        }
        let mut bytes = vec![0u8; len];
        match endian {
            Endian::Little => dfa.write_to_little_endian(&mut bytes),
            Endian::Big => dfa.write_to_big_endian(&mut bytes),
        }
        .map_err(|e| format!("regex \"{pattern}\": cannot serialize its DFA: {e}"))?;
        push_section(&mut body, &bytes, endian);
    }

    let mut blob = Vec::with_capacity(HEADER_LEN + body.len());
    blob.extend_from_slice(MAGIC);
    blob.extend_from_slice(&endian.u32_bytes(BYTE_ORDER_MARK));
    blob.extend_from_slice(&endian.u32_bytes(FORMAT_VERSION));
    blob.extend_from_slice(&Sha256::digest(&body));
    blob.extend_from_slice(&body);
    Ok(blob)
}

/// The most specific message of an error chain, on one line. regex-syntax
/// draws the pattern with a caret over several lines; keep its `error:`
/// line.
#[cfg(feature = "filter-compiler")]
fn innermost_message(error: &dyn std::error::Error) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    let text = inner.to_string();
    text.lines()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or(""))
        .to_string()
}

#[cfg(feature = "filter-compiler")]
fn push_section(out: &mut Vec<u8>, bytes: &[u8], endian: Endian) {
    out.extend_from_slice(&endian.u32_bytes(bytes.len() as u32));
    out.extend_from_slice(bytes);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A loaded blob: the expression and the DFAs, borrowing the blob's bytes.
pub struct Loaded {
    pub expression: &'static str,
    pub dfas: Vec<DFA<&'static [u32]>>,
}

/// Check and load a blob that lives for the rest of the program (see
/// [`aligned`]). The DFAs are used in place, not copied.
pub fn load(blob: &'static [u8]) -> Result<Loaded, String> {
    let header = blob.get(..HEADER_LEN).ok_or("too short to be a filter file")?;
    if &header[..8] != MAGIC {
        return Err("not a sip-capture filter file (compile one with `sip-capture compile-filter`)".into());
    }
    let mark = [header[8], header[9], header[10], header[11]];
    let endian = if u32::from_le_bytes(mark) == BYTE_ORDER_MARK {
        Endian::Little
    } else if u32::from_be_bytes(mark) == BYTE_ORDER_MARK {
        Endian::Big
    } else {
        return Err("damaged filter file: bad byte-order mark".into());
    };
    if endian != Endian::NATIVE {
        return Err(format!(
            "filter file built for {}, this is {}; compile it with --endian {}",
            endian.name(),
            Endian::NATIVE.name(),
            if Endian::NATIVE == Endian::Little {
                "little"
            } else {
                "big"
            }
        ));
    }
    let mut reader = Reader { blob, at: 12 };
    let version = reader.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "filter file format version {version}, this agent reads version {FORMAT_VERSION}; recompile it with this agent's compile-filter"
        ));
    }
    let body = &blob[HEADER_LEN..];
    if Sha256::digest(body)[..] != header[16..48] {
        return Err("filter file was edited or damaged: its checksum does not match".into());
    }

    reader.at = HEADER_LEN;
    let expression =
        core::str::from_utf8(reader.section()?).map_err(|_| "filter expression is not UTF-8".to_string())?;
    let count = reader.u32()?;
    let mut dfas = Vec::new();
    for i in 0..count {
        let (dfa, _) =
            DFA::from_bytes(reader.section()?).map_err(|e| format!("DFA {i} in the filter file: {e}"))?;
        dfas.push(dfa);
    }
    Ok(Loaded { expression, dfas })
}

/// Reads native-endian integers and length-prefixed, padded sections.
struct Reader {
    blob: &'static [u8],
    at: usize,
}

impl Reader {
    fn bytes(&mut self, len: usize) -> Result<&'static [u8], String> {
        let bytes = self
            .blob
            .get(self.at..self.at.saturating_add(len))
            .ok_or("filter file is cut short")?;
        self.at += len;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn section(&mut self) -> Result<&'static [u8], String> {
        let len = self.u32()? as usize;
        let bytes = self.bytes(len)?;
        self.at = self.at.next_multiple_of(4);
        Ok(bytes)
    }
}

/// Copy `bytes` into 4-byte aligned storage that lives for the rest of the
/// program, as DFAs are used in place. Called once at start-up.
pub fn aligned(bytes: &[u8]) -> &'static [u8] {
    let out = aligned_buffer(bytes.len());
    out.copy_from_slice(bytes);
    out
}

/// Read a filter file straight into 4-byte aligned storage that lives for
/// the rest of the program. Called once at start-up.
pub fn read_aligned(path: &std::path::Path) -> std::io::Result<&'static [u8]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    let out = aligned_buffer(len);
    file.read_exact(out)?;
    Ok(out)
}

fn aligned_buffer(len: usize) -> &'static mut [u8] {
    let words: &'static mut [u32] = vec![0u32; len.div_ceil(4)].leak();
    &mut bytemuck::cast_slice_mut(words)[..len]
}
