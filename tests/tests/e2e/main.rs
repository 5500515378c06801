//! End-to-end tests across crates against the real local services (moto, Azurite), one test
//! binary (one link of the dependency tree) with a module per subject.

mod big_upload;
mod delta_cloud;
mod incremental;
mod object_stores;
mod store_faults;
