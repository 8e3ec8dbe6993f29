//! One problem found in the config file, with its path (`sources[2].schedule`). A leaf module:
//! the config parser and the allocation rules' parser both report through it without
//! importing each other.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}
