//! A FOCUS file connector whose separate whole-file hash (`Connector::delivery_key`) is
//! replaced or counted: what a file overwritten between two reads, a hash that fails, or the
//! number of second reads looks like to the loader. Everything else is the real connector.

use std::sync::atomic::{AtomicUsize, Ordering};

use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_focus::FocusConnector;
use futures::stream::BoxStream;

/// What `delivery_key` answers.
pub enum KeyMode {
    /// The real hash of the file.
    Real,
    /// Always this key (a hash of other bytes).
    Fixed(String),
    /// Always this transient error.
    Fails(String),
}

pub struct Keyed {
    pub inner: FocusConnector,
    mode: KeyMode,
    calls: AtomicUsize,
}

impl Keyed {
    pub fn new(inner: FocusConnector, mode: KeyMode) -> Keyed {
        Keyed { inner, mode, calls: AtomicUsize::new(0) }
    }

    /// How many times the separate hash was asked for.
    pub fn key_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Connector for Keyed {
    fn kind(&self) -> &'static str {
        "focus"
    }
    async fn check(&self, cx: &Context) -> Result<(), ConnectorError> {
        self.inner.check(cx).await
    }
    async fn deliveries(&self, w: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        self.inner.deliveries(w, cx).await
    }
    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        self.inner.fetch(d, cx)
    }
    async fn delivery_key(&self, d: &Delivery, cx: &Context) -> Result<String, ConnectorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.mode {
            KeyMode::Real => self.inner.delivery_key(d, cx).await,
            KeyMode::Fixed(k) => Ok(k.clone()),
            KeyMode::Fails(m) => Err(ConnectorError::Transient(m.clone())),
        }
    }
}
