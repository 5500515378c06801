#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod conform;
pub mod explode;

pub use conform::{Check, ColumnType, Conform, ConformSettings, ConformSpec, Rule};
pub use explode::Explode;
