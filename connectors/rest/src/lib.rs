#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
pub mod selector;
mod source;

pub use config::{
    Auth, HttpSettings, Incremental, InvalidPagePolicy, KeyLocation, Paginator, Parent,
    RestSourceConfig, StopRules,
};
pub use source::RestSource;
