//! The OpenAI dVAE's weight names: the one place that knows
//! `blocks.{input|group_g.block_k.{id_path|res_path.conv_j}|output.conv}.{w|b}`
//! (models.md §1.4; `dall_e/encoder.py`, `dall_e/decoder.py` at openai/DALL-E `5be4b23`).

/// The input conv (`blocks.input`).
pub fn input_conv() -> String {
    "blocks.input".to_string()
}

/// Block `block` (1-based) of group `group` (1-based).
pub fn block(group: usize, block: usize) -> String {
    format!("blocks.group_{group}.block_{block}")
}

/// The 1×1 projection on a block's identity path (only where channels change).
pub fn id_path(block_prefix: &str) -> String {
    format!("{block_prefix}.id_path")
}

/// Conv `j` (1..=4) of a block's residual path.
pub fn res_conv(block_prefix: &str, j: usize) -> String {
    format!("{block_prefix}.res_path.conv_{j}")
}

/// The output conv (`blocks.output.conv`).
pub fn output_conv() -> String {
    "blocks.output.conv".to_string()
}

/// A conv's weight (`{prefix}.w`, shape `[n_out, n_in, kw, kw]`).
pub fn weight(prefix: &str) -> String {
    format!("{prefix}.w")
}

/// A conv's bias (`{prefix}.b`, shape `[n_out]`).
pub fn bias(prefix: &str) -> String {
    format!("{prefix}.b")
}

/// The node scope of a weight prefix: `blocks.group_1.block_1.res_path.conv_1` →
/// `blocks/group_1/block_1/res_path/conv_1`.
pub fn scope(prefix: &str) -> String {
    prefix.replace('.', "/")
}
