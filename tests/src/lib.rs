//! Helpers shared by the end-to-end tests.
#![allow(missing_docs)]

pub mod cloud;
