//! The project's dependency graph: pipelines and models as nodes, a model's references as its
//! inputs; topological order, cycles and unknown names reported with file and line, and
//! dbt-style selectors (`MODEL`, `+MODEL`, `MODEL+`, `layer.*`).

use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use stratalake_core::{Error, ErrorKind, Result};

/// An ingestion pipeline of the project: the lake table it writes and the ones it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineNode {
    /// The node's name: the lake table it writes (`bronze.orders`), else its pipeline id.
    pub name: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// Lake tables it reads (a Delta source in the lake).
    pub inputs: Vec<String>,
}

impl PipelineNode {
    /// A pipeline writing `name`, read from `file`, reading `inputs`.
    pub fn new(name: impl Into<String>, file: impl Into<PathBuf>, inputs: Vec<String>) -> Self {
        Self {
            name: name.into(),
            file: file.into(),
            inputs,
        }
    }
}

/// What a node is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeKind {
    /// An ingestion pipeline (one epoch per build).
    Pipeline(PipelineNode),
    /// A SQL model.
    Model(Box<Model>),
    /// A report drawn from the tables it reads.
    Report(Box<crate::report::Report>),
}

/// A node of the graph.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Node {
    /// `layer.name`, or a pipeline id.
    pub name: String,
    /// A pipeline or a model.
    pub kind: NodeKind,
    /// The nodes it reads (declared sources left out).
    pub inputs: Vec<String>,
}

impl Node {
    /// The file that defines it.
    pub fn file(&self) -> &std::path::Path {
        match &self.kind {
            NodeKind::Pipeline(p) => &p.file,
            NodeKind::Model(m) => &m.file,
            NodeKind::Report(r) => &r.file,
        }
    }

    /// The model, when it is one.
    pub fn model(&self) -> Option<&Model> {
        match &self.kind {
            NodeKind::Model(m) => Some(m),
            NodeKind::Pipeline(_) | NodeKind::Report(_) => None,
        }
    }
}

/// Nodes in dependency order.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    index: BTreeMap<String, usize>,
    sources: BTreeSet<String>,
}

fn config(msg: String) -> Error {
    Error::new(ErrorKind::Config, msg)
}

impl Graph {
    /// The graph of `pipelines` and `models`, reading `sources` (lake tables written
    /// elsewhere) as given.
    ///
    /// # Errors
    /// Config: two nodes of one name; a reference to a name that is no node or source (the
    /// file and line of the reference); a cycle (each step's file and line).
    pub fn try_new(
        pipelines: Vec<PipelineNode>,
        models: Vec<Model>,
        sources: &[String],
    ) -> Result<Self> {
        Self::try_new_with_reports(pipelines, models, Vec::new(), sources)
    }

    /// [`Graph::try_new`] with `reports` as nodes after the tables they read.
    ///
    /// # Errors
    /// As [`Graph::try_new`].
    pub fn try_new_with_reports(
        pipelines: Vec<PipelineNode>,
        models: Vec<Model>,
        reports: Vec<crate::report::Report>,
        sources: &[String],
    ) -> Result<Self> {
        let sources: BTreeSet<String> = sources.iter().cloned().collect();
        let mut nodes: Vec<Node> = pipelines
            .into_iter()
            .map(|p| Node {
                name: p.name.clone(),
                inputs: p.inputs.clone(),
                kind: NodeKind::Pipeline(p),
            })
            .chain(models.into_iter().map(|m| {
                Node {
                    name: m.name.clone(),
                    // A table check reading another table (a relationship) runs after it is built.
                    inputs: m
                        .references
                        .iter()
                        .map(|r| r.name.clone())
                        .chain(m.expectations.tables.iter().flat_map(|c| c.reads.clone()))
                        .fold(Vec::new(), |mut v, n| {
                            if !v.contains(&n) && n != m.name {
                                v.push(n);
                            }
                            v
                        }),
                    kind: NodeKind::Model(Box::new(m)),
                }
            }))
            .chain(reports.into_iter().map(|r| Node {
                name: r.name.clone(),
                inputs: r.references.iter().map(|x| x.name.clone()).collect(),
                kind: NodeKind::Report(Box::new(r)),
            }))
            .collect();
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for n in &nodes {
            if let Some(other) = seen.insert(n.name.clone(), n.file().to_path_buf()) {
                return Err(config(format!(
                    "`{}` is written by both {} and {}: one table, one writer",
                    n.name,
                    other.display(),
                    n.file().display()
                )));
            }
            if sources.contains(&n.name) {
                return Err(config(format!(
                    "`{}` is declared a source in strata.yaml and also written by {}",
                    n.name,
                    n.file().display()
                )));
            }
        }
        for n in &mut nodes {
            for input in &n.inputs {
                if !seen.contains_key(input) && !sources.contains(input) {
                    let refs = match &n.kind {
                        NodeKind::Model(m) => m.references.as_slice(),
                        NodeKind::Report(r) => r.references.as_slice(),
                        NodeKind::Pipeline(_) => &[],
                    };
                    let line = refs
                        .iter()
                        .find(|r| &r.name == input && r.line > 0)
                        .map_or(String::new(), |r| format!(":{}", r.line));
                    let known: Vec<&str> = seen.keys().map(String::as_str).collect();
                    return Err(config(format!(
                        "{}{line}: `{input}` is not a model, a pipeline's table or a source of this project (known: {}; a table written outside the project goes under `sources:` in strata.yaml)",
                        n.file().display(),
                        known.join(", ")
                    )));
                }
            }
            n.inputs.retain(|i| !sources.contains(i));
        }
        let order = topological(&nodes)?;
        let mut by_name: BTreeMap<String, Node> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let nodes: Vec<Node> = order.iter().filter_map(|n| by_name.remove(n)).collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Ok(Self {
            nodes,
            index,
            sources,
        })
    }

    /// Every node, inputs before the nodes that read them.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// The declared sources.
    pub fn sources(&self) -> &BTreeSet<String> {
        &self.sources
    }

    /// The nodes reading `name`.
    pub fn dependents(&self, name: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == name))
            .map(|n| n.name.as_str())
            .collect()
    }

    fn walk(&self, from: &str, up: bool, out: &mut BTreeSet<String>) {
        let next: Vec<String> = if up {
            self.node(from).map_or_else(Vec::new, |n| n.inputs.clone())
        } else {
            self.dependents(from)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for n in next {
            if out.insert(n.clone()) {
                self.walk(&n, up, out);
            }
        }
    }

    /// The nodes `selectors` name, in dependency order: `name`, `layer.*`, `+name` (with
    /// everything upstream), `name+` (with everything downstream); none: every node.
    ///
    /// # Errors
    /// Config for a selector that names no node.
    pub fn select(&self, selectors: &[String]) -> Result<Vec<&Node>> {
        if selectors.is_empty() {
            return Ok(self.nodes.iter().collect());
        }
        let mut chosen = BTreeSet::new();
        for sel in selectors.iter().flat_map(|s| s.split([',', ' '])) {
            if sel.is_empty() {
                continue;
            }
            let (up, rest) = match sel.strip_prefix('+') {
                Some(r) => (true, r),
                None => (false, sel),
            };
            let (down, base) = match rest.strip_suffix('+') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let matched: Vec<String> = match base.strip_suffix(".*") {
                Some(layer) => self
                    .nodes
                    .iter()
                    .filter(|n| n.name.split_once('.').is_some_and(|(l, _)| l == layer))
                    .map(|n| n.name.clone())
                    .collect(),
                None => self
                    .node(base)
                    .map(|n| vec![n.name.clone()])
                    .unwrap_or_default(),
            };
            if matched.is_empty() {
                let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                return Err(config(format!(
                    "`--select {sel}` names no model or pipeline of the project (known: {})",
                    known.join(", ")
                )));
            }
            for m in matched {
                if up {
                    self.walk(&m, true, &mut chosen);
                }
                if down {
                    self.walk(&m, false, &mut chosen);
                }
                chosen.insert(m);
            }
        }
        Ok(self
            .nodes
            .iter()
            .filter(|n| chosen.contains(&n.name))
            .collect())
    }
}

/// Kahn's order (ready nodes by name, so the order is stable), or the cycle.
fn topological(nodes: &[Node]) -> Result<Vec<String>> {
    let mut pending: BTreeMap<&str, BTreeSet<&str>> = nodes
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.inputs.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    loop {
        let ready: Vec<&str> = pending
            .iter()
            .filter(|(_, ins)| ins.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            break;
        }
        for r in ready {
            pending.remove(r);
            for ins in pending.values_mut() {
                ins.remove(r);
            }
            order.push(r.to_string());
        }
    }
    if pending.is_empty() {
        return Ok(order);
    }
    // Follow inputs inside the remainder until a name repeats: that is a cycle.
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut path: Vec<&str> = vec![pending.keys().next().copied().unwrap_or_default()];
    loop {
        let last = path[path.len() - 1];
        let Some(next) = pending.get(last).and_then(|i| i.iter().next().copied()) else {
            break;
        };
        if let Some(at) = path.iter().position(|p| *p == next) {
            path.push(next);
            path.drain(..at);
            break;
        }
        path.push(next);
    }
    let steps: Vec<String> = path
        .windows(2)
        .map(|w| {
            let n = by_name[w[0]];
            let line = n
                .model()
                .and_then(|m| m.references.iter().find(|r| r.name == w[1]))
                .map_or(String::new(), |r| format!(":{}", r.line));
            format!("{} ({}{line}) reads {}", w[0], n.file().display(), w[1])
        })
        .collect();
    Err(config(format!(
        "the models form a cycle: {}",
        steps.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn model(name: &str, sql: &str) -> Model {
        let (l, t) = name.split_once('.').unwrap();
        Model::parse(Path::new(&format!("models/{l}/{t}.sql")), sql).unwrap()
    }

    fn graph() -> Graph {
        Graph::try_new(
            vec![PipelineNode::new(
                "bronze.orders",
                "pipelines/orders.yaml",
                vec![],
            )],
            vec![
                model(
                    "gold.revenue",
                    "SELECT * FROM silver.orders o\nJOIN silver.partners p ON o.p = p.id",
                ),
                model("silver.orders", "SELECT * FROM bronze.orders"),
                model("silver.partners", "SELECT * FROM bronze.partners"),
            ],
            &["bronze.partners".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn nodes_come_in_dependency_order_and_selectors_follow_edges() {
        let g = graph();
        let names: Vec<&str> = g.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bronze.orders",
                "silver.partners",
                "silver.orders",
                "gold.revenue"
            ]
        );
        let sel = |s: &str| -> Vec<String> {
            g.select(&[s.to_string()])
                .unwrap()
                .iter()
                .map(|n| n.name.clone())
                .collect()
        };
        assert_eq!(sel("gold.revenue"), ["gold.revenue"]);
        assert_eq!(
            sel("+gold.revenue"),
            [
                "bronze.orders",
                "silver.partners",
                "silver.orders",
                "gold.revenue"
            ]
        );
        assert_eq!(sel("silver.orders+"), ["silver.orders", "gold.revenue"]);
        assert_eq!(sel("silver.*"), ["silver.partners", "silver.orders"]);
        assert!(g.select(&["gold.nope".to_string()]).is_err());
    }

    #[test]
    fn an_unknown_name_and_a_cycle_name_files_and_lines() {
        let e = Graph::try_new(
            vec![],
            vec![model("gold.a", "SELECT *\nFROM silver.nope")],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("models/gold/a.sql:2: `silver.nope`"), "{e}");
        let e = Graph::try_new(
            vec![],
            vec![
                model("gold.a", "SELECT *\nFROM gold.b"),
                model("gold.b", "SELECT *\n\nFROM gold.c"),
                model("gold.c", "SELECT * FROM gold.a"),
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
        assert!(
            e.contains("gold.a (models/gold/a.sql:2) reads gold.b"),
            "{e}"
        );
        assert!(
            e.contains("gold.b (models/gold/b.sql:3) reads gold.c"),
            "{e}"
        );
        assert!(
            e.contains("gold.c (models/gold/c.sql:1) reads gold.a"),
            "{e}"
        );
    }
}
