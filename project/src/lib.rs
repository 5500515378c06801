#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod airflow;
pub mod expect;
pub mod graph;
pub mod model;
pub mod report;
pub mod schedule;
pub mod yaml;

pub use graph::{Graph, Node, NodeKind, PipelineNode};
pub use model::{Materialized, Model, ModelSettings, Reference};
pub use schedule::Schedule;

// `View` is defined below.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use stratalake_core::{Error, ErrorKind, Result};

/// `s` as a single-quoted SQL string literal (DataFusion's and the standard's: `'` doubled),
/// for values put into SQL text (a node, model or rule name in a filter).
pub fn sql_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `s` as a double-quoted string literal that YAML and Python both read back as `s`: `"`,
/// `\` and line breaks escaped, other control characters as `\uXXXX`.
pub fn double_quoted(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The project file's name.
pub const PROJECT_FILE: &str = "strata.yaml";

/// `strata.yaml`: what a project is made of.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProjectConfig {
    /// The project's name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Where its Delta tables live (`<lake>/<layer>/<name>`): a directory (relative to the
    /// project), `s3://bucket/path` or `az://container/path`.
    pub lake: String,
    /// A cloud lake's connection file (`s3: ...` or `azure_blob: ...`), relative to the
    /// project.
    #[serde(default)]
    pub lake_connection: Option<PathBuf>,
    /// The privacy policy models' `mask:` settings refer to, relative to the project.
    #[serde(default)]
    pub privacy: Option<PathBuf>,
    /// The ingestion pipelines (pipeline files, relative to the project).
    #[serde(default)]
    pub pipelines: Vec<PathBuf>,
    /// Lake tables written outside the project that models read (`bronze.legacy_orders`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// The models' directory (`models/<layer>/<name>.sql`), relative to the project.
    #[serde(default = "default_models")]
    pub models: PathBuf,
    /// The reporting views' directory (`<name>.sql`: a Snowflake SELECT over the gold tables
    /// the warehouse sync loads), relative to the project.
    #[serde(default = "default_warehouse")]
    pub warehouse: PathBuf,
    /// Models built at once when they do not depend on each other. Range: 1..=64.
    #[serde(
        default = "default_concurrency",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 64>"
    )]
    pub concurrency: usize,
    /// When a scheduler runs it (`strata airflow dag`): see [`Schedule`].
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Report files (`reports/retail.yaml`, relative to the project): see [`report`].
    #[serde(default)]
    pub reports: Vec<PathBuf>,
}

fn default_models() -> PathBuf {
    PathBuf::from("models")
}

fn default_warehouse() -> PathBuf {
    PathBuf::from("warehouse")
}

fn default_concurrency() -> usize {
    2
}

/// A project read from its directory: its configuration and its models.
#[derive(Debug, Clone)]
pub struct Project {
    root: PathBuf,
    config: ProjectConfig,
    models: Vec<Model>,
    views: Vec<View>,
    reports: Vec<report::Report>,
}

/// A reporting view of the warehouse: `warehouse/<name>.sql`, a Snowflake SELECT over gold
/// tables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct View {
    /// The view's name (the file's stem).
    pub name: String,
    /// The file, relative to the project.
    pub file: PathBuf,
    /// The SELECT.
    pub sql: String,
    /// The gold tables it reads (lower case).
    pub tables: Vec<String>,
}

impl View {
    /// Parse view `file` (relative to the project) from its text; `gold` are the gold tables
    /// it may read.
    ///
    /// # Errors
    /// Config naming the file (and line): SQL that does not parse or is not one query, or a
    /// table that is no gold model.
    pub fn parse(file: &Path, text: &str, gold: &[&str]) -> Result<Self> {
        use sqlparser::ast::{ObjectName, Spanned, Statement};
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let err = |line: Option<u64>, msg: String| {
            let place = line.map_or(file.display().to_string(), |l| {
                format!("{}:{l}", file.display())
            });
            Error::config(format!("{place}: {msg}"))
        };
        if !model::is_name(&name) {
            return Err(err(
                None,
                "a view's file name is its name: lowercase letters, digits and `_`".into(),
            ));
        }
        let st =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::SnowflakeDialect {}, text)
                .map_err(|e| err(None, format!("the SQL does not parse: {e}")))?;
        let [Statement::Query(q)] = st.as_slice() else {
            return Err(err(None, "a view is one SELECT".into()));
        };
        let mut tables: Vec<String> = Vec::new();
        let mut bad = None;
        let _ = sqlparser::ast::visit_relations(q.as_ref(), |n: &ObjectName| {
            let t =
                n.0.last()
                    .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
                    .unwrap_or_default();
            if !gold.contains(&t.as_str()) {
                bad = Some(err(
                    Some(n.span().start.line),
                    format!(
                        "`{n}` is not a gold model of the project (a view reads the synced gold tables)"
                    ),
                ));
                return std::ops::ControlFlow::Break(());
            }
            if !tables.contains(&t) {
                tables.push(t);
            }
            std::ops::ControlFlow::Continue(())
        });
        if let Some(e) = bad {
            return Err(e);
        }
        Ok(Self {
            name,
            file: file.to_path_buf(),
            sql: text.to_string(),
            tables,
        })
    }
}

impl Project {
    /// Read `dir/strata.yaml` and every `*.sql` under its models directory.
    ///
    /// # Errors
    /// NotFound without a `strata.yaml`; Config naming the file and line of any setting,
    /// model or SQL that does not parse.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Error::new(ErrorKind::NotFound, "cannot read the project file")
                .with_context("file", file.display())
                .with_source(e)
        })?;
        let config: ProjectConfig = yaml::parse(&text, Path::new(PROJECT_FILE), 0)?;
        if let Some(s) = &config.schedule {
            s.validate()
                .map_err(|e| Error::config(format!("{PROJECT_FILE}: {}", e.message())))?;
        }
        for s in &config.sources {
            if !s
                .split_once('.')
                .is_some_and(|(l, t)| model::is_name(l) && model::is_name(t))
            {
                return Err(Error::config(format!(
                    "{PROJECT_FILE}: source `{s}`: name a lake table as `layer.name`"
                )));
            }
        }
        let mut files = Vec::new();
        let models_dir = dir.join(&config.models);
        if models_dir.is_dir() {
            sql_files(&models_dir, &mut files)?;
        }
        files.sort();
        let mut models = Vec::new();
        for f in files {
            let rel = f.strip_prefix(dir).unwrap_or(&f).to_path_buf();
            let text = std::fs::read_to_string(&f).map_err(|e| {
                Error::new(ErrorKind::Config, "cannot read a model")
                    .with_context("file", rel.display())
                    .with_source(e)
            })?;
            models.push(Model::parse(&rel, &text)?);
        }
        let gold: Vec<&str> = models
            .iter()
            .filter(|m| m.layer == "gold")
            .map(|m| m.table.as_str())
            .collect();
        let mut views = Vec::new();
        let views_dir = dir.join(&config.warehouse);
        if views_dir.is_dir() {
            let mut files = Vec::new();
            sql_files(&views_dir, &mut files)?;
            files.sort();
            for f in files {
                let rel = f.strip_prefix(dir).unwrap_or(&f).to_path_buf();
                let text = std::fs::read_to_string(&f).map_err(|e| {
                    Error::new(ErrorKind::Config, "cannot read a view")
                        .with_context("file", rel.display())
                        .with_source(e)
                })?;
                views.push(View::parse(&rel, &text, &gold)?);
            }
        }
        let mut reports = Vec::new();
        for f in &config.reports {
            let text = std::fs::read_to_string(dir.join(f)).map_err(|e| {
                Error::new(ErrorKind::Config, "cannot read a report")
                    .with_context("file", f.display())
                    .with_source(e)
            })?;
            reports.push(report::Report::parse(f, &text)?);
        }
        Ok(Self {
            root: dir.to_path_buf(),
            config,
            models,
            views,
            reports,
        })
    }

    /// The project's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `strata.yaml`.
    pub fn config(&self) -> &ProjectConfig {
        &self.config
    }

    /// The models, by file name.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The reporting views (`warehouse/*.sql`), by file name.
    pub fn views(&self) -> &[View] {
        &self.views
    }

    /// `path` (relative to the project) as a path to open.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// The graph of the models and `pipelines` (the caller reads the pipeline files: which
    /// lake table each writes and reads).
    ///
    /// # Errors
    /// As [`Graph::try_new`].
    pub fn graph(&self, pipelines: Vec<PipelineNode>) -> Result<Graph> {
        Graph::try_new_with_reports(
            pipelines,
            self.models.clone(),
            self.reports.clone(),
            &self.config.sources,
        )
    }

    /// Its reports.
    pub fn reports(&self) -> &[report::Report] {
        &self.reports
    }
}

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::new(ErrorKind::Config, "cannot list the models directory")
            .with_context("dir", dir.display())
            .with_source(e)
    })?;
    for e in entries {
        let p = e
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot list the models directory").with_source(e)
            })?
            .path();
        if p.is_dir() {
            sql_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "sql") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_sql_literal_parses_back_to_the_text() {
        use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, Value};
        for text in ["plain", "it's", "''", "a'; DROP TABLE t; --"] {
            let sql = format!("SELECT {}", sql_quoted(text));
            let parsed =
                sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::GenericDialect {}, &sql)
                    .expect("parses");
            let Statement::Query(q) = &parsed[0] else {
                panic!("{sql}")
            };
            let SetExpr::Select(sel) = q.body.as_ref() else {
                panic!("{sql}")
            };
            let SelectItem::UnnamedExpr(Expr::Value(v)) = &sel.projection[0] else {
                panic!("{sql}")
            };
            assert_eq!(
                v.value,
                Value::SingleQuotedString(text.to_string()),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_project_loads_its_models_and_refuses_bad_settings_by_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("models/gold")).unwrap();
        std::fs::write(
            d.path().join(PROJECT_FILE),
            "name: shop\nlake: lake\nsources: [bronze.orders]\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("models/gold/n.sql"),
            "SELECT COUNT(*) AS n FROM bronze.orders",
        )
        .unwrap();
        let p = Project::load(d.path()).unwrap();
        assert_eq!(p.config().concurrency, 2);
        assert_eq!(p.models()[0].name, "gold.n");
        let g = p.graph(vec![]).unwrap();
        assert_eq!(g.nodes().len(), 1);
        assert!(g.nodes()[0].inputs.is_empty());

        std::fs::write(
            d.path().join(PROJECT_FILE),
            "name: shop\nlake: lake\nconcurrency: 0\n",
        )
        .unwrap();
        let e = Project::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("strata.yaml:3"), "{e}");
        assert!(e.contains("concurrency"), "{e}");

        std::fs::write(
            d.path().join(PROJECT_FILE),
            "name: shop\nlake: lake\nsources: [bronze.orders]\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("warehouse")).unwrap();
        std::fs::write(d.path().join("warehouse/v_n.sql"), "SELECT N FROM \"N\"").unwrap();
        let p = Project::load(d.path()).unwrap();
        assert_eq!(p.views()[0].tables, ["n"]);
        std::fs::write(d.path().join("warehouse/v_n.sql"), "SELECT N\nFROM ORDERS").unwrap();
        let e = Project::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("warehouse/v_n.sql:2") && e.contains("ORDERS"),
            "{e}"
        );
    }
}
