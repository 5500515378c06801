//! Record and value selectors: the JSONPath subset REST APIs need (`$`, `.field`,
//! `['field']`, `[n]`, `[*]`), walked over `serde_json::value::RawValue` so a page's records
//! are found without building a DOM: only the objects on the path are parsed, each record is
//! handed on as its raw text. A page's [`Document`] parses each object or array on a path once,
//! however many selectors (records, total, cursor, has-more) walk through it.

use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use stratalake_core::{Error, Result};

type Object<'a> = HashMap<Cow<'a, str>, &'a RawValue>;

/// A JSON body being read by selectors: the objects and arrays they step through are parsed on
/// first use and kept (by their place in the text), so the records, the total and the next
/// cursor of one page cost one scan of each value on their paths, not one per selector.
pub struct Document<'a> {
    root: &'a RawValue,
    objects: RefCell<HashMap<usize, Rc<Object<'a>>>>,
    arrays: RefCell<HashMap<usize, Rc<Vec<&'a RawValue>>>>,
}

impl std::fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("bytes", &self.root.get().len())
            .finish_non_exhaustive()
    }
}

impl<'a> Document<'a> {
    /// A document over an already parsed value.
    pub fn new(root: &'a RawValue) -> Self {
        Self {
            root,
            objects: RefCell::new(HashMap::new()),
            arrays: RefCell::new(HashMap::new()),
        }
    }

    fn object(&self, v: &'a RawValue) -> std::result::Result<Rc<Object<'a>>, serde_json::Error> {
        let at = v.get().as_ptr() as usize;
        if let Some(o) = self.objects.borrow().get(&at) {
            return Ok(o.clone());
        }
        let o: Rc<Object<'a>> = Rc::new(serde_json::from_str(v.get())?);
        self.objects.borrow_mut().insert(at, o.clone());
        Ok(o)
    }

    fn array(
        &self,
        v: &'a RawValue,
    ) -> std::result::Result<Rc<Vec<&'a RawValue>>, serde_json::Error> {
        let at = v.get().as_ptr() as usize;
        if let Some(a) = self.arrays.borrow().get(&at) {
            return Ok(a.clone());
        }
        let a: Rc<Vec<&'a RawValue>> = Rc::new(serde_json::from_str(v.get())?);
        self.arrays.borrow_mut().insert(at, a.clone());
        Ok(a)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
    All,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    steps: Vec<Step>,
    text: String,
}

impl Selector {
    /// Parse `$.data.items`, `$['data']`, `$.pages[0].rows`, `$.groups[*].rows` (a leading `$`
    /// may be left out).
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the path and the position.
    pub fn parse(path: &str) -> Result<Self> {
        let bad = |at: usize, why: &str| {
            Error::config(format!("invalid JSON path: {why}"))
                .with_context("path", path)
                .with_context("at", at)
        };
        let s = path.trim();
        let mut rest = s.strip_prefix('$').unwrap_or(s);
        let mut steps = Vec::new();
        if !rest.is_empty() && !rest.starts_with(['.', '[']) {
            rest = s; // `data.items` without `$`
            let (head, tail) = rest.split_at(rest.find(['.', '[']).unwrap_or(rest.len()));
            steps.push(Step::Field(head.to_string()));
            rest = tail;
        }
        while !rest.is_empty() {
            let at = s.len() - rest.len();
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(bad(at, "empty field name"));
                }
                steps.push(Step::Field(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r.find("']").ok_or_else(|| bad(at, "unclosed ['"))?;
                steps.push(Step::Field(r[..end].to_string()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad(at, "unclosed ["))?;
                let inner = &r[..end];
                steps.push(if inner == "*" {
                    Step::All
                } else {
                    Step::Index(
                        inner
                            .parse()
                            .map_err(|_| bad(at, "index is not a number"))?,
                    )
                });
                rest = &r[end + 1..];
            } else {
                return Err(bad(at, "expected `.` or `[`"));
            }
        }
        Ok(Self {
            steps,
            text: path.to_string(),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every value the path reaches (a `[*]` fans out). `Ok(empty)` when a field is missing or
    /// null; `Err` when the JSON is invalid or a step meets the wrong kind of value.
    ///
    /// # Errors
    /// A reason naming the step.
    pub fn values<'a>(&self, root: &'a RawValue) -> std::result::Result<Vec<&'a RawValue>, String> {
        self.values_in(&Document::new(root))
    }

    /// [`Selector::values`] within `doc`, sharing its parsed objects and arrays.
    ///
    /// # Errors
    /// A reason naming the step.
    pub fn values_in<'a>(
        &self,
        doc: &Document<'a>,
    ) -> std::result::Result<Vec<&'a RawValue>, String> {
        let mut cur = vec![doc.root];
        for step in &self.steps {
            let mut next = Vec::with_capacity(cur.len());
            for v in cur {
                let text = v.get();
                if text == "null" {
                    continue;
                }
                match step {
                    Step::Field(name) => {
                        let map = doc
                            .object(v)
                            .map_err(|e| format!("`{name}`: not a JSON object ({e})"))?;
                        if let Some(x) = map.get(name.as_str()) {
                            next.push(*x);
                        }
                    }
                    Step::Index(i) => {
                        let arr = doc
                            .array(v)
                            .map_err(|e| format!("[{i}]: not a JSON array ({e})"))?;
                        if let Some(x) = arr.get(*i) {
                            next.push(*x);
                        }
                    }
                    Step::All => {
                        let arr = doc
                            .array(v)
                            .map_err(|e| format!("[*]: not a JSON array ({e})"))?;
                        next.extend(arr.iter().copied());
                    }
                }
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The records at the path: an array's elements, or one object. A missing or null value is
    /// no records.
    ///
    /// # Errors
    /// A reason when the JSON is invalid or the value is a scalar.
    pub fn records<'a>(
        &self,
        root: &'a RawValue,
    ) -> std::result::Result<Vec<&'a RawValue>, String> {
        self.records_in(&Document::new(root))
    }

    /// [`Selector::records`] within `doc`.
    ///
    /// # Errors
    /// As [`Selector::records`].
    pub fn records_in<'a>(
        &self,
        doc: &Document<'a>,
    ) -> std::result::Result<Vec<&'a RawValue>, String> {
        let mut out = Vec::new();
        for v in self.values_in(doc)? {
            let t = v.get();
            if t.starts_with('[') {
                let arr = doc
                    .array(v)
                    .map_err(|e| format!("the records are not a JSON array ({e})"))?;
                out.extend(arr.iter().copied());
            } else if t.starts_with('{') {
                out.push(v);
            } else if t != "null" {
                return Err(format!("`{}` is neither an array nor an object", self.text));
            }
        }
        Ok(out)
    }

    /// The first value at the path as text (a string's contents, a number's digits); `None`
    /// when missing or null.
    pub fn text(&self, root: &RawValue) -> Option<String> {
        self.text_in(&Document::new(root))
    }

    /// [`Selector::text`] within `doc`.
    pub fn text_in(&self, doc: &Document<'_>) -> Option<String> {
        let v = *self.values_in(doc).ok()?.first()?;
        scalar_text(v)
    }
}

/// A scalar's text: a string's contents, or a number's or boolean's literal; `None` for null,
/// objects and arrays.
pub fn scalar_text(v: &RawValue) -> Option<String> {
    let t = v.get();
    match t.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(t).ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn paths_select_records_and_values() {
        let body = raw(
            r#"{"data":{"items":[{"id":1},{"id":2,"x":"a\nb"}]},"next":"c2","total":7,"more":false,"groups":[{"rows":[{"id":3}]},{"rows":[{"id":4}]}]}"#,
        );
        let recs = Selector::parse("$.data.items")
            .unwrap()
            .records(&body)
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].get(), r#"{"id":2,"x":"a\nb"}"#);
        assert_eq!(
            Selector::parse("$['next']").unwrap().text(&body).as_deref(),
            Some("c2")
        );
        assert_eq!(
            Selector::parse("total").unwrap().text(&body).as_deref(),
            Some("7")
        );
        assert_eq!(
            Selector::parse("$.more").unwrap().text(&body).as_deref(),
            Some("false")
        );
        let fan = Selector::parse("$.groups[*].rows")
            .unwrap()
            .records(&body)
            .unwrap();
        assert_eq!(fan.len(), 2);
        assert_eq!(
            Selector::parse("$.groups[1].rows[0].id")
                .unwrap()
                .text(&body)
                .as_deref(),
            Some("4")
        );
        assert!(
            Selector::parse("$.missing")
                .unwrap()
                .records(&body)
                .unwrap()
                .is_empty()
        );
        let bare = raw(r#"[{"a":1},{"a":2}]"#);
        assert_eq!(
            Selector::parse("$").unwrap().records(&bare).unwrap().len(),
            2
        );
        assert!(Selector::parse("$.total").unwrap().records(&body).is_err());
    }

    #[test]
    fn selectors_in_one_document_share_its_parses() {
        let body = raw(r#"{"data":[{"id":1},{"id":2}],"meta":{"total":2,"next":"c"}}"#);
        let doc = Document::new(&body);
        let recs = Selector::parse("$.data").unwrap().records_in(&doc).unwrap();
        assert_eq!(recs.len(), 2);
        let total = Selector::parse("$.meta.total").unwrap().text_in(&doc);
        let next = Selector::parse("$.meta.next").unwrap().text_in(&doc);
        assert_eq!((total.as_deref(), next.as_deref()), (Some("2"), Some("c")));
        // The root and `meta` were parsed once each, `data` once, whatever walked them.
        assert_eq!(doc.objects.borrow().len(), 2);
        assert_eq!(doc.arrays.borrow().len(), 1);
        // The same answers as without a shared document.
        assert_eq!(Selector::parse("$.meta.next").unwrap().text(&body), next);
    }

    #[test]
    fn bad_paths_name_the_position() {
        let e = Selector::parse("$.data[").unwrap_err();
        assert_eq!(e.context_value("path"), Some("$.data["));
        assert!(Selector::parse("$..x").is_err());
        assert!(Selector::parse("$.a[x]").is_err());
    }
}
