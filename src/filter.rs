//! Filter stage: decides which SIP messages are published.
//!
//! The filter language (SIP_FILTER) is not implemented yet: only the empty
//! filter, which selects every message, is accepted.

use crate::sip::Message;

/// A compiled SIP_FILTER.
#[derive(Debug)]
pub enum Filter {
    /// The empty filter: every message is published.
    All,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        if text.trim().is_empty() {
            Ok(Filter::All)
        } else {
            Err("the filter language is not implemented yet; leave SIP_FILTER empty".into())
        }
    }

    pub fn matches(&self, _message: &Message<'_>) -> bool {
        match self {
            Filter::All => true,
        }
    }
}
