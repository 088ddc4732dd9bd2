//! Structural validation of a `ModelProto`, run before any graph is written (and by
//! `dalle-export check`). Each rule returns its own message:
//!
//! 1. the model declares an IR version and imports the default opset; every node's domain is
//!    imported;
//! 2. the graph declares at least one output, and every input/output has a tensor type;
//! 3. node names are non-empty and unique; every value name is defined once (inputs,
//!    initializers and node outputs share one namespace);
//! 4. nodes are in topological order: every input is defined before the node that reads it
//!    (a name defined nowhere is reported as dangling);
//! 5. every graph output is defined;
//! 6. nothing is dead: every node contributes to a graph output and every initializer is read.

use crate::proto;
use std::collections::{HashMap, HashSet};

/// Checks the rules above; the error is a human-readable message naming the offending item.
pub fn validate(model: &proto::ModelProto) -> Result<(), String> {
    if model.ir_version.unwrap_or(0) <= 0 {
        return Err("the model declares no IR version".into());
    }
    let domains: HashSet<&str> = model
        .opset_import
        .iter()
        .map(|o| o.domain.as_deref().unwrap_or(""))
        .collect();
    if !domains.contains("") {
        return Err("the model does not import the default ONNX opset".into());
    }
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    for n in &graph.node {
        let d = n.domain.as_deref().unwrap_or("");
        if !domains.contains(d) {
            return Err(format!(
                "node `{}` uses domain `{d}`, which has no opset import",
                n.name.as_deref().unwrap_or("")
            ));
        }
    }

    if graph.output.is_empty() {
        return Err("the graph declares no outputs".into());
    }
    for (kind, list) in [("input", &graph.input), ("output", &graph.output)] {
        for v in list {
            let name = v.name.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(format!("a graph {kind} has no name"));
            }
            let typed = matches!(
                v.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(proto::type_proto::Value::TensorType(t)) if t.elem_type.unwrap_or(0) != 0
            );
            if !typed {
                return Err(format!("graph {kind} `{name}` has no tensor type"));
            }
        }
    }

    // Definitions in order: inputs, initializers, then node outputs as nodes are visited.
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut define = |name: &str, what: String| -> Result<(), String> {
        if name.is_empty() {
            return Err(format!("{what} defines a value with an empty name"));
        }
        if let Some(prev) = defined.insert(name.to_string(), what.clone()) {
            return Err(format!(
                "value name `{name}` is defined twice ({prev} and {what})"
            ));
        }
        Ok(())
    };
    for v in &graph.input {
        define(v.name.as_deref().unwrap_or(""), "a graph input".into())?;
    }
    for t in &graph.initializer {
        define(t.name.as_deref().unwrap_or(""), "an initializer".into())?;
    }
    let all_outputs: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut node_names = HashSet::new();
    let mut available: HashSet<&str> = graph
        .input
        .iter()
        .filter_map(|v| v.name.as_deref())
        .chain(graph.initializer.iter().filter_map(|t| t.name.as_deref()))
        .collect();
    for (i, n) in graph.node.iter().enumerate() {
        let name = n.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(format!(
                "node #{i} ({}) has no name",
                n.op_type.as_deref().unwrap_or("?")
            ));
        }
        if !node_names.insert(name) {
            return Err(format!("node name `{name}` is used twice"));
        }
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            if !available.contains(input.as_str()) {
                return Err(match all_outputs.get(input.as_str()) {
                    Some(j) => format!(
                        "nodes are not in topological order: `{name}` reads `{input}`, produced later by node #{j}"
                    ),
                    None => format!(
                        "node `{name}` reads `{input}`, which is defined nowhere (dangling)"
                    ),
                });
            }
        }
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            define(o, format!("node `{name}`"))?;
            available.insert(o.as_str());
        }
    }
    for o in &graph.output {
        let name = o.name.as_deref().unwrap_or("");
        if !available.contains(name) {
            return Err(format!(
                "graph output `{name}` is not produced by any node, input or initializer"
            ));
        }
    }

    // Liveness: walk back from the outputs.
    let producer: HashMap<&str, usize> = all_outputs;
    let mut live_nodes = vec![false; graph.node.len()];
    let mut used: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = graph
        .output
        .iter()
        .filter_map(|o| o.name.as_deref())
        .collect();
    while let Some(v) = stack.pop() {
        if !used.insert(v) {
            continue;
        }
        if let Some(&i) = producer.get(v)
            && !live_nodes[i]
        {
            live_nodes[i] = true;
            stack.extend(
                graph.node[i]
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(String::as_str),
            );
        }
    }
    if let Some(i) = live_nodes.iter().position(|l| !l) {
        return Err(format!(
            "node `{}` is dead: none of its outputs reaches a graph output",
            graph.node[i].name.as_deref().unwrap_or("")
        ));
    }
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap_or("");
        if !used.contains(name) {
            return Err(format!("initializer `{name}` is never read"));
        }
    }
    Ok(())
}
