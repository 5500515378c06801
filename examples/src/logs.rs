//! The process's logs on stderr: every line carries the run id; `--log-format json` writes one
//! JSON object per line (time, level, run id, pipeline, target, message, fields) for log
//! collectors; colour only on a terminal and never with `NO_COLOR` set. Everything written goes
//! through the redaction layer ([`crate::exit::RedactingStderr`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `time LEVEL run=<id> pipeline=<p> target: message key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

static RUN_ID: OnceLock<String> = OnceLock::new();

/// This process's run id (set once at start).
pub fn run_id() -> &'static str {
    RUN_ID.get().map_or("", String::as_str)
}

/// Whether colour is wanted on stderr: a terminal, and `NO_COLOR` unset or empty.
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the subscriber: `filter` (an `EnvFilter` directive), `format`, `run_id`.
pub fn init(filter: &str, format: LogFormat, run_id: String) {
    let _ = RUN_ID.set(run_id);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| crate::exit::RedactingStderr)
        .event_format(StrataFormat {
            json: format == LogFormat::Json,
            ansi: colour(),
        });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(SpanFieldsLayer)
        .with(fmt)
        .try_init();
}

/// A span's fields, kept as values so events inside it can name them (`pipeline`).
struct SpanFields(BTreeMap<String, serde_json::Value>);

/// Records every new span's fields in its extensions.
struct SpanFieldsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFieldsLayer {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut v = Fields::default();
        attrs.record(&mut v);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(v.fields));
        }
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: BTreeMap<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields
                .insert(field.name().to_string(), value.to_string().into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.insert(field.name().to_string(), text.into());
        }
    }
}

/// Formats each event as a text or a JSON line.
struct StrataFormat {
    json: bool,
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for StrataFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        // Span fields, outermost first, then the event's own (which win).
        let mut fields = BTreeMap::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(sf) = span.extensions().get::<SpanFields>() {
                    fields.extend(sf.0.clone());
                }
            }
        }
        fields.extend(f.fields);
        let pipeline = fields.remove("pipeline");
        let meta = event.metadata();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if self.json {
            let mut o = serde_json::Map::new();
            o.insert("time".into(), time.into());
            o.insert("level".into(), meta.level().as_str().into());
            o.insert("run_id".into(), run_id().into());
            if let Some(p) = pipeline {
                o.insert("pipeline".into(), p);
            }
            o.insert("target".into(), meta.target().into());
            o.insert("message".into(), f.message.unwrap_or_default().into());
            o.insert(
                "fields".into(),
                serde_json::Value::Object(fields.into_iter().collect()),
            );
            let line = serde_json::to_string(&o).map_err(|_| std::fmt::Error)?;
            return writeln!(w, "{line}");
        }
        let level = meta.level().as_str();
        let level = if self.ansi {
            let code = match *meta.level() {
                tracing::Level::ERROR => "31",
                tracing::Level::WARN => "33",
                tracing::Level::INFO => "32",
                _ => "2",
            };
            format!("\x1b[{code}m{level:>5}\x1b[0m")
        } else {
            format!("{level:>5}")
        };
        let mut line = format!("{time} {level} run={}", run_id());
        if let Some(p) = pipeline {
            let _ = write!(
                line,
                " pipeline={}",
                p.as_str().map_or(p.to_string(), str::to_string)
            );
        }
        let _ = write!(
            line,
            " {}: {}",
            meta.target(),
            f.message.unwrap_or_default()
        );
        for (k, v) in fields {
            match v.as_str() {
                Some(s) => {
                    let _ = write!(line, " {k}={s}");
                }
                None => {
                    let _ = write!(line, " {k}={v}");
                }
            }
        }
        writeln!(w, "{line}")
    }
}
