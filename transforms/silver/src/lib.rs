#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod conform;
pub mod explode;
pub mod retail;

pub use conform::{Check, Conform, ConformSpec, Rule};
pub use explode::Explode;
