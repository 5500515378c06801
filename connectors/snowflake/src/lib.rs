#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod decode;
pub mod error;
pub mod jwt;
pub mod sink;
pub mod source;
pub mod stage;
pub mod types;
