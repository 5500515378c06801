#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod expect;
pub mod model;
pub mod runs;

pub use model::{ModelAction, ModelOutcome, ModelPlan, SqlTransform, TableModel, query};
