//! YAML settings parsed with errors that name the file, the line and the key: what every
//! Strata file (`strata.yaml`, a model's settings, a report, a pipeline) is read with.

use serde::de::DeserializeOwned;
use std::path::Path;
use stratalake_core::{Error, ErrorKind, Result};

/// Deserialize `text`, which starts after `offset` lines of `file`. An error is Config and
/// reads `file:line: `key.path`: what is wrong`, the line being the key's own (not the start
/// of its mapping, where serde reports a value its own check refused).
///
/// # Errors
/// Config, naming the file, the line and the key.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path, offset: usize) -> Result<T> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let last = key.rsplit('.').next().unwrap_or_default().to_string();
        let line = inner
            .location()
            .map(|l| key_line(text, l.line(), &last).unwrap_or(l.line()) + offset);
        let mut msg = inner.to_string();
        if let Some(l) = inner.location() {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(m) = msg.strip_suffix(&suffix) {
                msg = m.to_string();
            }
        }
        // serde_yaml names a (shorter) path of its own: the full key is named below.
        let msg = match msg.split_once(": ") {
            Some((p, rest)) if !p.is_empty() && key.starts_with(p) && !p.contains(' ') => {
                rest.to_string()
            }
            _ => msg,
        };
        let place = match line {
            Some(l) => format!("{}:{l}", file.display()),
            None => file.display().to_string(),
        };
        let what = if key.is_empty() || key == "." {
            msg
        } else {
            format!("`{key}`: {msg}")
        };
        Error::new(ErrorKind::Config, format!("{place}: {what}"))
    })
}

/// The 1-based line, at or after `from`, where `key:` is written (as a mapping key, a list
/// item's first key, or inside a flow mapping).
pub fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    if key.is_empty() || key.starts_with('?') {
        return None;
    }
    let pat = format!("{key}:");
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| {
            let t = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches(['{', ' ']);
            t.starts_with(&pat) || l.contains(&format!(" {pat}")) || l.contains(&format!("{{{pat}"))
        })
        .map(|(i, _)| i + 1)
}
