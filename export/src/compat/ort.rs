//! ONNX Runtime providers (CPU, CUDA): does a node have a kernel registration for its opset and
//! element types? Looked up in the kernel table (`tables.rs`); type constraints are matched per
//! input/output position as the registration binds them.

use super::facts::GraphFacts;
use super::tables::{Binding, Kernel, KernelTable};
use crate::proto;

/// Why `node` has no kernel on `ep` (`"CPU"`, `"CUDA"`), or `None` when it has one.
pub fn missing_kernel(
    table: &KernelTable,
    facts: &GraphFacts<'_>,
    node: &proto::NodeProto,
    ep: &str,
    opset: i64,
) -> Option<String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let domain = node.domain.as_deref().unwrap_or("");
    let Some(kernel) = table.find(ep, domain, op, opset) else {
        return Some(if table.knows(ep, domain, op) {
            format!("no {ep} kernel for opset {opset}")
        } else {
            format!(
                "no {ep} kernel in the kernel table (export/data/onnxruntime-kernels-opset18.tsv)"
            )
        });
    };
    let problems = type_problems(kernel, facts, node);
    (!problems.is_empty()).then(|| format!("no {ep} kernel for {}", problems.join("; ")))
}

/// Positions whose element type the registration does not take, as `T = int32 (`name`) not in
/// {…}`; unknown types are reported too.
pub fn type_problems(
    kernel: &Kernel,
    facts: &GraphFacts<'_>,
    node: &proto::NodeProto,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    let positions = node
        .input
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n, false))
        .chain(node.output.iter().enumerate().map(|(i, n)| (i, n, true)));
    for (i, name, is_output) in positions {
        if name.is_empty() {
            continue;
        }
        let Some(binding) = kernel.binding(i, is_output) else {
            let side = if is_output { "output" } else { "input" };
            out.push(format!(
                "{side} {i} (`{name}`), which the kernel does not have"
            ));
            continue;
        };
        let Some(elem) = facts.value(name).map(|v| v.elem.as_str()) else {
            out.push(format!("`{name}` of unknown type"));
            continue;
        };
        match binding {
            Binding::Fixed(t) if t != elem => out.push(format!("`{name}` {elem} (needs {t})")),
            Binding::Constraint(c) => {
                if let Some(allowed) = kernel.constraints.get(c)
                    && !allowed.iter().any(|a| a == elem)
                    && !failed.contains(&c.as_str())
                {
                    failed.push(c);
                    out.push(format!(
                        "{c} = {elem} (`{name}`) not in {{{}}}",
                        allowed.join(", ")
                    ));
                }
            }
            Binding::Fixed(_) => {}
        }
    }
    out
}
