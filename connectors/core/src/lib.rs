//! The seam between providers and the ledger.
//!
//! Everything a connector needs and nothing more: the [`Connector`] trait, the normalised
//! [`ChargeLine`], exact [`money`] parsing and summing, billing [`period`]s and timestamp
//! parsing, and the error types. This crate knows nothing of any database (no sqlx) and
//! nothing of `costledger`'s own modules; every connector crate depends on it alone.

pub mod connector;
pub mod currency;
pub mod error;
pub mod focus_columns;
pub mod line;
pub mod money;
pub mod period;
pub mod sku_price;
pub mod text;

pub use connector::{Batch, Connector, Context, Delivery, PeriodWindow, ReadLimits, SpentLines};
pub use error::{ConnectorError, RowError};
pub use focus_columns::{FOCUS_DECIMAL_COUNT, FOCUS_TEXT_COUNT, FocusColumns, FocusValues};
pub use line::{ChargeCategory, ChargeClass, ChargeLine, DateBounds, FOCUS_COLUMNS, Tags, write_map_json};
pub use money::{
    Amount, ExactSum, MoneyError, Totals, canonical, exact_product, exact_unit_price, parse_amount, write_canonical,
};
pub use period::{BillingPeriod, TimeError, format_ts, iso_week_label, parse_timestamp, week_of, write_ts};
pub use sku_price::{PropertyKind, SkuPriceDetails, SkuPriceProperty};
