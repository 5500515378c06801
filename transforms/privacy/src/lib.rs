#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod classify;
pub mod kanon;
pub mod mask;
pub mod policy;
pub mod rows;
pub mod warehouse;

pub use classify::{ColumnClass, Tag, classify};
pub use kanon::{KReport, k_anonymity};
pub use mask::{Mask, Masker};
pub use policy::{Method, Policy};
pub use rows::RowFilter;

/// The retail platform's policy (`policies/retail.yaml`): what `strata scaffold` writes as
/// `privacy.yaml`, and a starting point for your own.
pub const RETAIL_POLICY_YAML: &str = include_str!("../policies/retail.yaml");
