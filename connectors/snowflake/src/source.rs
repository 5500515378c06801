//! [`SnowflakeSource`]: a query's rows as Arrow batches, optionally incremental by a
//! high-water mark.
//!
//! Without `incremental`, every epoch reads the whole query (a snapshot). With it, planning
//! pins the mark (`SELECT MAX(column)` over the query) and the epoch reads the rows above the
//! committed mark and at or below the pinned one, so rows written while it runs wait for the
//! next epoch and nothing is read twice. The mark is committed with the data.

use crate::client::{Bindings, SnowflakeClient, Value};
use crate::config::SnowflakeConfig;
use crate::decode::result_schema;
use crate::types::ident;
use arrow_array::Array;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use stratalake_core::stream::{BatchStreamAdapter, SendableBatchStream};
use stratalake_core::{Context, Cursor, Error, ReadPlan, ReadRequest, Result, Source, Split};

/// Read only rows above the last mark.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Incremental {
    /// The column whose values only grow (`updated_at`, a sequence).
    pub column: String,
    /// Start above this value (text Snowflake converts to the column type); from the
    /// beginning when absent.
    #[serde(default)]
    pub initial_value: Option<String>,
}

/// Options of a [`SnowflakeSource`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SnowflakeSourceConfig {
    /// The connection.
    pub connection: SnowflakeConfig,
    /// A SELECT statement.
    pub query: String,
    /// Read incrementally by a high-water mark.
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Column names in lower case, as Strata's other sources name them (default true).
    #[serde(default = "yes")]
    pub lower_case_columns: bool,
}

fn yes() -> bool {
    true
}

impl SnowflakeSourceConfig {
    /// Read `query` in full every epoch.
    pub fn new(connection: SnowflakeConfig, query: impl Into<String>) -> Self {
        Self {
            connection,
            query: query.into(),
            incremental: None,
            lower_case_columns: true,
        }
    }

    /// Read incrementally by `column`.
    #[must_use]
    pub fn with_incremental(mut self, column: impl Into<String>) -> Self {
        self.incremental = Some(Incremental {
            column: column.into(),
            initial_value: None,
        });
        self
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    from: Option<String>,
    to: Option<String>,
}

/// A query as a source. See the module docs.
#[derive(Debug)]
pub struct SnowflakeSource {
    cfg: SnowflakeSourceConfig,
    client: SnowflakeClient,
    schema: SchemaRef,
    name: String,
}

impl SnowflakeSource {
    /// Connect and learn the query's columns (`LIMIT 0`).
    ///
    /// # Errors
    /// Those of the connection and of the query (bad SQL is Config, a missing table NotFound).
    pub async fn try_new(cfg: SnowflakeSourceConfig) -> Result<Self> {
        let client = SnowflakeClient::connect(cfg.connection.clone()).await?;
        let probe = client
            .query(&format!("SELECT * FROM ({}) LIMIT 0", cfg.query))
            .await?;
        let schema = result_schema(&probe.rowtype, cfg.lower_case_columns);
        if let Some(inc) = &cfg.incremental
            && !probe
                .rowtype
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&inc.column))
        {
            return Err(Error::config(format!(
                "snowflake source: the incremental column {} is not in the query's columns",
                inc.column
            )));
        }
        Ok(Self {
            name: "snowflake".into(),
            cfg,
            client,
            schema,
        })
    }

    fn column(&self, inc: &Incremental) -> String {
        ident(&inc.column)
    }
}

#[async_trait]
impl Source for SnowflakeSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let Some(inc) = &self.cfg.incremental else {
            let spec = Spec {
                from: None,
                to: None,
            };
            return Ok(ReadPlan::new(
                vec![Split::encode("query", &spec, None)?],
                None,
            ));
        };
        let from = req
            .from
            .as_ref()
            .map(|c| c.as_str().to_string())
            .or_else(|| inc.initial_value.clone());
        let r = self
            .client
            .query(&format!(
                "SELECT MAX({}) FROM ({}) q",
                self.column(inc),
                self.cfg.query
            ))
            .await?;
        let to = r.batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
            let c = b.column(0);
            if c.is_null(0) {
                return None;
            }
            let f = arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                .ok()?;
            Some(f.value(0).to_string())
        });
        let Some(to) = to else {
            return Ok(ReadPlan::new(Vec::new(), req.from.clone()));
        };
        if from.as_deref() == Some(to.as_str()) {
            return Ok(ReadPlan::new(Vec::new(), req.from.clone()));
        }
        let spec = Spec {
            from: from.clone(),
            to: Some(to.clone()),
        };
        Ok(ReadPlan::new(
            vec![Split::encode(
                format!(
                    "{} in ({}, {to}]",
                    inc.column,
                    from.as_deref().unwrap_or("-inf")
                ),
                &spec,
                None,
            )?],
            Some(Cursor::new(to)),
        ))
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let spec: Spec = split.decode("a Snowflake source")?;
        let (sql, bindings) = match (&self.cfg.incremental, spec.to) {
            (Some(inc), Some(to)) => {
                let col = self.column(inc);
                let mut values = Vec::new();
                let mut cond = Vec::new();
                if let Some(from) = spec.from {
                    cond.push(format!("{col} > ?"));
                    values.push(Value::Text(from));
                }
                cond.push(format!("{col} <= ?"));
                values.push(Value::Text(to));
                (
                    format!(
                        "SELECT * FROM ({}) q WHERE {}",
                        self.cfg.query,
                        cond.join(" AND ")
                    ),
                    Bindings::Positional(values),
                )
            }
            _ => (self.cfg.query.clone(), Bindings::None),
        };
        let client = self.client.clone();
        let lower = self.cfg.lower_case_columns;
        let schema = self.schema.clone();
        let expected = schema.clone();
        let stream = futures::stream::once(async move {
            client.query_stream(&sql, &bindings, lower).await
        })
        .try_flatten()
        .map(move |b| {
            let b = b?;
            if b.schema().fields() != expected.fields() {
                return Err(Error::new(
                    stratalake_core::ErrorKind::Schema,
                    "snowflake source: the query's columns changed since the source was created",
                ));
            }
            b.with_schema(expected.clone())
                .map_err(|e| Error::internal("schema").with_source(e))
        });
        let stream = BatchStreamAdapter::boxed(schema, Box::pin(stream));
        Ok(stratalake_core::rebatch(stream, ctx.batch_size()))
    }

    async fn check(&self, _ctx: &Context) -> Result<()> {
        self.client.query("SELECT 1").await.map(|_| ())
    }
}
