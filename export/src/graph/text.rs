//! A deterministic text dump of a model, for review (`dalle-export inspect FILE.onnx`) and
//! snapshot tests: header, inputs, outputs, initializers (with external-data locations), then
//! one line per node with its attributes and typed outputs.

use crate::graph::proto_io::dtype_from_onnx;
use crate::proto;
use std::collections::HashMap;
use std::fmt::Write;

fn type_str(t: Option<&proto::TypeProto>) -> String {
    use proto::tensor_shape_proto::dimension::Value as D;
    let Some(proto::type_proto::Value::TensorType(tt)) = t.and_then(|t| t.value.as_ref()) else {
        return "?".into();
    };
    let dtype = tt
        .elem_type
        .and_then(dtype_from_onnx)
        .map(|d| d.name().to_string())
        .unwrap_or_else(|| format!("type{}", tt.elem_type.unwrap_or(0)));
    let dims = match &tt.shape {
        None => "[?]".to_string(),
        Some(s) => {
            let parts: Vec<String> = s
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(D::DimValue(n)) => n.to_string(),
                    Some(D::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
    };
    format!("{dtype}{dims}")
}

fn attr_str(a: &proto::AttributeProto) -> String {
    use proto::attribute_proto::AttributeType as A;
    let name = a.name.as_deref().unwrap_or("");
    let value = match a.r#type.and_then(|t| A::try_from(t).ok()) {
        Some(A::Int) => a.i.unwrap_or(0).to_string(),
        Some(A::Float) => format!("{:?}", a.f.unwrap_or(0.0)),
        Some(A::Ints) => format!("{:?}", a.ints),
        Some(A::Floats) => format!("{:?}", a.floats),
        Some(A::String) => format!(
            "{:?}",
            String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[]))
        ),
        Some(A::Tensor) => {
            a.t.as_ref()
                .map(|t| format!("tensor{:?}", t.dims))
                .unwrap_or_default()
        }
        _ => "?".into(),
    };
    format!("{name}={value}")
}

/// Renders `model` as text. Identical models give identical text.
pub fn dump(model: &proto::ModelProto) -> String {
    let mut s = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            let d = o.domain.as_deref().unwrap_or("");
            format!(
                "{}:{}",
                if d.is_empty() { "ai.onnx" } else { d },
                o.version.unwrap_or(0)
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "model ir={} opset={} producer={} {}",
        model.ir_version.unwrap_or(0),
        opsets.join(","),
        model.producer_name.as_deref().unwrap_or(""),
        model.producer_version.as_deref().unwrap_or("")
    );
    for m in &model.metadata_props {
        let _ = writeln!(
            s,
            "metadata {} = {}",
            m.key.as_deref().unwrap_or(""),
            m.value.as_deref().unwrap_or("")
        );
    }
    let Some(g) = &model.graph else {
        s.push_str("(no graph)\n");
        return s;
    };
    let _ = writeln!(s, "graph {}", g.name.as_deref().unwrap_or(""));
    let _ = writeln!(s, "inputs:");
    for v in &g.input {
        let _ = writeln!(
            s,
            "  {}: {}",
            v.name.as_deref().unwrap_or(""),
            type_str(v.r#type.as_ref())
        );
    }
    let _ = writeln!(s, "outputs:");
    for v in &g.output {
        let _ = writeln!(
            s,
            "  {}: {}",
            v.name.as_deref().unwrap_or(""),
            type_str(v.r#type.as_ref())
        );
    }
    let total: usize = g
        .initializer
        .iter()
        .map(|t| {
            t.raw_data.as_ref().map(Vec::len).unwrap_or(0)
                + t.external_data
                    .iter()
                    .find(|e| e.key.as_deref() == Some("length"))
                    .and_then(|e| e.value.as_deref()?.parse::<usize>().ok())
                    .unwrap_or(0)
        })
        .sum();
    let _ = writeln!(s, "initializers: {} ({total} bytes)", g.initializer.len());
    for t in &g.initializer {
        let dtype = t
            .data_type
            .and_then(dtype_from_onnx)
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| "?".into());
        let loc = if t.external_data.is_empty() {
            String::new()
        } else {
            let kv: Vec<String> = t
                .external_data
                .iter()
                .map(|e| {
                    format!(
                        "{}={}",
                        e.key.as_deref().unwrap_or(""),
                        e.value.as_deref().unwrap_or("")
                    )
                })
                .collect();
            format!(" external({})", kv.join(", "))
        };
        let _ = writeln!(
            s,
            "  {}: {dtype}{:?}{loc}",
            t.name.as_deref().unwrap_or(""),
            t.dims
        );
    }
    let types: HashMap<&str, String> = g
        .value_info
        .iter()
        .chain(&g.output)
        .filter_map(|v| Some((v.name.as_deref()?, type_str(v.r#type.as_ref()))))
        .collect();
    let _ = writeln!(s, "nodes: {}", g.node.len());
    for n in &g.node {
        let attrs: Vec<String> = n.attribute.iter().map(attr_str).collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", attrs.join(", "))
        };
        let outs: Vec<String> = n
            .output
            .iter()
            .map(|o| match types.get(o.as_str()) {
                Some(t) => format!("{o}: {t}"),
                None => o.clone(),
            })
            .collect();
        let _ = writeln!(
            s,
            "  {} = {}({}){attrs} -> {}",
            n.name.as_deref().unwrap_or(""),
            n.op_type.as_deref().unwrap_or(""),
            n.input.join(", "),
            outs.join(", ")
        );
    }
    s
}
