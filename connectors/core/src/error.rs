//! Connector errors (the whole delivery failed) and row errors (one line could not be
//! normalised: it is quarantined, counted and reported, and the rest of the delivery loads).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The input itself is unusable (missing columns, truncated gzip, not CSV…). Retrying the
    /// same input will not help; the message says where and what to do.
    #[error("{location}: {message}; {hint}")]
    Input { location: String, message: String, hint: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("rate limited by the provider{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("cancelled")]
    Cancelled,
}

impl ConnectorError {
    pub fn input(location: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Input { location: location.into(), message: message.into(), hint: hint.into() }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Worth retrying later (by the scheduler) without any change to config or input.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transient(_) => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ),
            Self::Input { .. } | Self::Auth(_) | Self::Cancelled => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// A source row that could not become a [`crate::ChargeLine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// `file:line` (1-based physical line of the record's start) or `page N row M`.
    pub location: String,
    pub reason: String,
    /// The raw record (clipped to a bounded size).
    pub raw: String,
    /// The raw invoice-basis amount text, if the row had one (money is conserved: source total
    /// = charges + quarantine).
    pub raw_amount: Option<String>,
    pub currency: Option<String>,
}
