#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod bounds;
pub mod checkpoint;
pub mod context;
pub mod error;
pub mod expect;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod panic;
pub mod quarantine;
pub mod runner;
pub mod secrets;
pub mod stream;
pub mod traits;
pub mod transforms;
pub mod types;

pub use checkpoint::{CheckpointStore, InMemoryCheckpointStore, LocalFileCheckpointStore};
pub use context::{CancellationToken, Context, ContextBuilder};
pub use error::{Error, ErrorKind, Result, ResultExt, Retry};
pub use http::HttpSettings;
pub use merge::{DeleteWhen, SchemaEvolution, WriteMode, check_merge_columns};
pub use metrics::{Metrics, MetricsSnapshot};
pub use quarantine::{QuarantineRecord, quarantine_batch, quarantine_records, quarantine_schema};
pub use runner::{
    Pipeline, PipelineBuilder, RetryPolicy, RunObserver, RunOptions, RunOutcome, RunReport,
    crash_point, panic_point,
};
pub use stream::{BatchStream, BatchStreamAdapter, SendableBatchStream, empty_stream, rebatch};
pub use traits::{
    BatchTransform, CommitOutcome, Delivery, Prepared, Sample, Sink, SinkCapabilities, SinkWriter,
    Source, StreamTransform, read_all, sample,
};
pub use types::{CommitMarker, Cursor, Epoch, ReadPlan, ReadRequest, Split};

/// Re-exported so implementors name the same Arrow types as core.
pub use arrow_array::RecordBatch;
/// Re-exported so implementors name the same Arrow types as core.
pub use arrow_schema::{Schema, SchemaRef};
/// Secrets in configs are `SecretString`s (never printed by `Debug`, logs or errors).
pub use secrecy::{self, ExposeSecret, SecretString};
/// The Arrow crates at the version Strata is built with (one major in the whole tree), so an
/// embedding crate names the same types without pinning arrow itself.
pub use {arrow_array, arrow_schema, arrow_select};
