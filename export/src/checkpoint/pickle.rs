//! A pickle virtual machine (protocols 0–5) that builds data and never executes anything.
//!
//! Objects live in an arena (`Vec<Node>`) addressed by index, so the memo, the stack and
//! containers share objects exactly like Python does (a memoized dict mutated by a later
//! `SETITEMS` is seen by every `GET`). Globals go through the whitelist in `globals.rs`;
//! `REDUCE` / `NEWOBJ` / `BUILD` only have the inert meanings implemented below. Every read is
//! bounds-checked, so malformed input is an error with its byte offset, never a panic.
//!
//! Memory stays proportional to the pickle: the arena may hold at most [`cells_limit`] objects
//! and references, the value tree shares whatever the memo shares (reference-counted), and the
//! tensors it builds are file-backed views charged to the file's [`Budget`].

use super::budget::Budget;
use super::error::CheckpointError;
use super::globals::{ClassAllowList, Known, classify};
use super::strided::{Storage, view};
use super::value::PickleValue;
use dalle_bundle::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// Deeper nesting is refused (it would only come from a hostile file); this also keeps the
/// derived recursive `Clone`/`Drop`/`PartialEq` of [`PickleValue`] far from the stack limit.
const MAX_DEPTH: usize = 500;

/// Persistent ids are flat tuples; their copies need little depth.
const MAX_PID_DEPTH: usize = 8;

/// Strings in a persistent id (`'storage'`, a key, a device) are short.
const MAX_PID_STRING: usize = 4096;

/// Objects plus references a pickle of `data_len` bytes may build: every opcode adds at most a
/// few, so 4 per byte (plus 1 Mi for tiny files) leaves real checkpoints far below it, while
/// a small file that clones one long list many times (e.g. as `REDUCE` arguments) is refused.
fn cells_limit(data_len: usize) -> usize {
    data_len.saturating_mul(4).saturating_add(1 << 20)
}

/// Resolves `PERSID` / `BINPERSID` ids (torch storages) to loaded storages.
pub(crate) trait PersistentLoad {
    /// `Ok(None)`: this source has no persistent ids.
    fn load(&mut self, pid: &PickleValue) -> Result<Option<Storage>, CheckpointError>;
}

/// For plain pickles: any persistent id is an error.
struct NoPersistentIds;

impl PersistentLoad for NoPersistentIds {
    fn load(&mut self, _pid: &PickleValue) -> Result<Option<Storage>, CheckpointError> {
        Ok(None)
    }
}

/// Unpickles `data` (no persistent ids allowed), turning allow-listed classes into records.
pub fn unpickle(data: &[u8], allow: &ClassAllowList) -> Result<PickleValue, CheckpointError> {
    let mut budget = Budget::for_file("<pickle>", data.len() as u64);
    unpickle_with(data, "<pickle>", allow, &mut NoPersistentIds, &mut budget)
}

/// Unpickles `data`; `origin` names the file and entry in errors; tensors and copied strings
/// are charged to `budget`.
pub(crate) fn unpickle_with(
    data: &[u8],
    origin: &str,
    allow: &ClassAllowList,
    loader: &mut dyn PersistentLoad,
    budget: &mut Budget,
) -> Result<PickleValue, CheckpointError> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        origin,
        allow,
        loader,
        budget,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        cells: 0,
        max_cells: cells_limit(data.len()),
    };
    let root = vm.run()?;
    vm.into_value(root)
}

type Id = usize;

#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Set(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global {
        dotted: String,
        known: Known,
    },
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
    },
    Tensor(crate::tensor::TensorData),
    Storage(Storage),
    /// Moved out while converting to a `PickleValue`.
    Taken,
}

impl Node {
    fn kind(&self) -> String {
        match self {
            Node::None => "None".into(),
            Node::Bool(_) => "bool".into(),
            Node::Int(_) | Node::BigInt(_) => "int".into(),
            Node::Float(_) => "float".into(),
            Node::Str(_) => "str".into(),
            Node::Bytes(_) => "bytes".into(),
            Node::List(_) => "list".into(),
            Node::Tuple(_) => "tuple".into(),
            Node::Set(_) => "set".into(),
            Node::Dict(_) => "dict".into(),
            Node::Global { dotted, .. } => format!("global {dotted}"),
            Node::Object { class, .. } => format!("object {class}"),
            Node::Tensor(_) => "tensor".into(),
            Node::Storage(_) => "storage".into(),
            Node::Taken => "<taken>".into(),
        }
    }

    /// How many references this node holds.
    fn child_count(&self) -> usize {
        match self {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => v.len(),
            Node::Dict(items) => items.len().saturating_mul(2),
            Node::Object { args, state, .. } => args.len() + usize::from(state.is_some()),
            _ => 0,
        }
    }

    fn children(&self) -> Vec<Id> {
        match self {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => v.clone(),
            Node::Dict(items) => items.iter().flat_map(|&(k, v)| [k, v]).collect(),
            Node::Object { args, state, .. } => args.iter().copied().chain(*state).collect(),
            _ => Vec::new(),
        }
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for errors.
    op_pos: usize,
    origin: &'a str,
    allow: &'a ClassAllowList,
    loader: &'a mut dyn PersistentLoad,
    budget: &'a mut Budget,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    /// Stack heights at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Objects and references built so far, checked against `max_cells` after every opcode.
    cells: usize,
    max_cells: usize,
}

impl Vm<'_> {
    fn err(&self, message: impl Into<String>) -> CheckpointError {
        CheckpointError::Pickle {
            origin: self.origin.to_string(),
            offset: self.op_pos,
            message: message.into(),
        }
    }

    // ---- input -------------------------------------------------------------------------

    fn take(&mut self, n: u64) -> Result<&[u8], CheckpointError> {
        let remaining = self.data.len() - self.pos.min(self.data.len());
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= remaining)
            .ok_or_else(|| {
                self.err(format!(
                    "length {n} exceeds the {remaining} bytes left (truncated or corrupt pickle)"
                ))
            })?;
        let start = self.pos;
        self.pos += n;
        self.data
            .get(start..start + n)
            .ok_or_else(|| self.err("unexpected end of pickle data"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let bytes = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32_le(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64_le(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `\n`-terminated line (text opcodes), without the newline.
    fn line(&mut self) -> Result<String, CheckpointError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated text argument"))?;
        let bytes = self.take(len as u64 + 1)?;
        let text = bytes.get(..len).unwrap_or_default();
        String::from_utf8(text.to_vec()).map_err(|_| self.err("text argument is not UTF-8"))
    }

    fn utf8(&mut self, n: u64) -> Result<String, CheckpointError> {
        let bytes = self.take(n)?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.err("string is not valid UTF-8"))
    }

    // ---- stack -------------------------------------------------------------------------

    fn add(&mut self, node: Node) -> Id {
        self.cells = self
            .cells
            .saturating_add(1)
            .saturating_add(node.child_count());
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn push(&mut self, node: Node) {
        let id = self.add(node);
        self.stack.push(id);
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, CheckpointError> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn peek(&self) -> Result<Id, CheckpointError> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, CheckpointError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        if mark > self.stack.len() {
            return Err(self.err("MARK above the stack top"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn node(&self, id: Id) -> Result<&Node, CheckpointError> {
        self.nodes
            .get(id)
            .ok_or_else(|| self.err("dangling object reference"))
    }

    fn node_mut(&mut self, id: Id) -> Result<&mut Node, CheckpointError> {
        if id >= self.nodes.len() {
            return Err(self.err("dangling object reference"));
        }
        self.nodes
            .get_mut(id)
            .ok_or_else(|| CheckpointError::structure("pickle", "dangling object reference"))
    }

    fn memo_get(&self, key: u64) -> Result<Id, CheckpointError> {
        self.memo
            .get(&key)
            .copied()
            .ok_or_else(|| self.err(format!("memo key {key} was never stored")))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), CheckpointError> {
        let top = self.peek()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn str_of(&self, id: Id, what: &str) -> Result<String, CheckpointError> {
        match self.node(id)? {
            Node::Str(s) => Ok(s.clone()),
            other => Err(self.err(format!("{what} must be a str, got {}", other.kind()))),
        }
    }

    fn int_of(&self, id: Id, what: &str) -> Result<i64, CheckpointError> {
        match self.node(id)? {
            Node::Int(v) => Ok(*v),
            Node::Bool(b) => Ok(i64::from(*b)),
            other => Err(self.err(format!("{what} must be an int, got {}", other.kind()))),
        }
    }

    /// The items of a tuple or list.
    fn items_of(&self, id: Id, what: &str) -> Result<Vec<Id>, CheckpointError> {
        match self.node(id)? {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) => Ok(v.clone()),
            other => Err(self.err(format!("{what} must be a tuple, got {}", other.kind()))),
        }
    }

    fn ints_of(&self, id: Id, what: &str) -> Result<Vec<i64>, CheckpointError> {
        self.items_of(id, what)?
            .into_iter()
            .map(|i| self.int_of(i, what))
            .collect()
    }

    // ---- main loop ---------------------------------------------------------------------

    fn run(&mut self) -> Result<Id, CheckpointError> {
        loop {
            if self.cells > self.max_cells {
                return Err(CheckpointError::TooManyObjects {
                    origin: self.origin.to_string(),
                    offset: self.op_pos,
                    limit: self.max_cells,
                    data_len: self.data.len(),
                });
            }
            self.op_pos = self.pos;
            let op = self
                .byte()
                .map_err(|_| self.err("pickle ended without STOP (truncated)"))?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only; it must fit in the data.
                    let n = self.u64_le()?;
                    let remaining = (self.data.len() - self.pos) as u64;
                    if n > remaining {
                        return Err(self.err(format!(
                            "frame of {n} bytes exceeds the {remaining} bytes left"
                        )));
                    }
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.peek()?;
                    self.stack.push(top);
                }
                // Scalars.
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Node::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Node::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Node::Int(i64::from(v)));
                }
                0x8a => {
                    let n = self.byte()?;
                    let bytes = self.take(u64::from(n))?.to_vec();
                    self.push(long_node(bytes));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n = u64::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_node(bytes));
                }
                b'I' => {
                    let line = self.line()?;
                    let node = match line.as_str() {
                        "01" => Node::Bool(true),
                        "00" => Node::Bool(false),
                        text => Node::Int(
                            text.parse()
                                .map_err(|_| self.err(format!("bad INT `{text}`")))?,
                        ),
                    };
                    self.push(node);
                }
                b'L' => {
                    let line = self.line()?;
                    let text = line.strip_suffix('L').unwrap_or(&line);
                    let v = text
                        .parse()
                        .map_err(|_| self.err(format!("unsupported LONG `{text}`")))?;
                    self.push(Node::Int(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line
                        .parse()
                        .map_err(|_| self.err(format!("bad FLOAT `{line}`")))?;
                    self.push(Node::Float(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Node::Float(v));
                }
                // Strings and bytes.
                b'S' | b'V' => {
                    let line = self.line()?;
                    let text = if op == b'S' {
                        unquote(&line)
                    } else {
                        Some(line.as_str()).filter(|l| !l.contains('\\'))
                    };
                    let text = text
                        .ok_or_else(|| self.err("escaped protocol-0 strings are not supported"))?;
                    let node = Node::Str(text.to_string());
                    self.push(node);
                }
                b'T' => {
                    let n = self.u32_le()?;
                    let s = self.utf8(u64::from(n))?;
                    self.push(Node::Str(s));
                }
                b'U' | 0x8c => {
                    let n = self.byte()?;
                    let s = self.utf8(u64::from(n))?;
                    self.push(Node::Str(s));
                }
                b'X' => {
                    let n = self.u32_le()?;
                    let s = self.utf8(u64::from(n))?;
                    self.push(Node::Str(s));
                }
                0x8d => {
                    let n = self.u64_le()?;
                    let s = self.utf8(n)?;
                    self.push(Node::Str(s));
                }
                b'C' => {
                    let n = self.byte()?;
                    let b = self.take(u64::from(n))?.to_vec();
                    self.push(Node::Bytes(b));
                }
                b'B' => {
                    let n = self.u32_le()?;
                    let b = self.take(u64::from(n))?.to_vec();
                    self.push(Node::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = self.u64_le()?;
                    let b = self.take(n)?.to_vec();
                    self.push(Node::Bytes(b));
                }
                0x97 => return Err(self.err("out-of-band buffers (NEXT_BUFFER) are not supported")),
                0x98 => {
                    self.peek()?;
                }
                // Tuples, lists, dicts, sets.
                b')' => self.push(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b']' => self.push(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend_list(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?;
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_dict(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(pairs)?;
                }
                0x8f => self.push(Node::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let top = self.peek()?;
                    self.cells = self.cells.saturating_add(items.len());
                    match self.node_mut(top)? {
                        Node::Set(set) => set.extend(items),
                        other => {
                            let kind = other.kind();
                            return Err(self.err(format!("ADDITEMS on {kind}")));
                        }
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::Set(items));
                }
                // Memo.
                b'g' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.err("bad GET key"))?;
                    let id = self.memo_get(key)?;
                    self.stack.push(id);
                }
                b'h' => {
                    let key = self.byte()?;
                    let id = self.memo_get(u64::from(key))?;
                    self.stack.push(id);
                }
                b'j' => {
                    let key = self.u32_le()?;
                    let id = self.memo_get(u64::from(key))?;
                    self.stack.push(id);
                }
                b'p' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.err("bad PUT key"))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.byte()?;
                    self.memo_put(u64::from(key))?;
                }
                b'r' => {
                    let key = self.u32_le()?;
                    self.memo_put(u64::from(key))?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                // Globals and objects.
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let name = self.str_of(name, "STACK_GLOBAL name")?;
                    let module = self.str_of(module, "STACK_GLOBAL module")?;
                    self.push_global(&module, &name)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = self.items_of(args, "REDUCE arguments")?;
                    let id = self.call(callable, args)?;
                    self.stack.push(id);
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let args = self.items_of(args, "NEWOBJ arguments")?;
                    let id = self.instantiate(class, args)?;
                    self.stack.push(id);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let args = self.items_of(args, "NEWOBJ_EX arguments")?;
                    let id = self.instantiate(class, args)?;
                    self.stack.push(id);
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let args = self.pop_mark()?;
                    self.push_global(&module, &name)?;
                    let class = self.pop()?;
                    let id = self.instantiate(class, args)?;
                    self.stack.push(id);
                }
                b'o' => {
                    let mut items = self.pop_mark()?.into_iter();
                    let class = items
                        .next()
                        .ok_or_else(|| self.err("OBJ without a class"))?;
                    let id = self.instantiate(class, items.collect())?;
                    self.stack.push(id);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.peek()?;
                    self.build(target, state)?;
                }
                b'P' => {
                    let pid = self.line()?;
                    let pid = self.add(Node::Str(pid));
                    self.persistent(pid)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.persistent(pid)?;
                }
                0x82..=0x84 => {
                    return Err(self.err("extension-registry opcodes (EXT1/2/4) are not supported"));
                }
                other => return Err(self.err(format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>, CheckpointError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Id>) -> Result<(), CheckpointError> {
        self.cells = self.cells.saturating_add(items.len());
        let top = self.peek()?;
        match self.node_mut(top)? {
            Node::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.err(format!("APPEND to {kind}")))
            }
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Id, Id)>) -> Result<(), CheckpointError> {
        self.cells = self.cells.saturating_add(pairs.len().saturating_mul(2));
        let top = self.peek()?;
        match self.node_mut(top)? {
            Node::Dict(dict) => {
                for (k, v) in pairs {
                    dict.push((k, v));
                }
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.err(format!("SETITEM on {kind}")))
            }
        }
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<(), CheckpointError> {
        let dotted = format!("{module}.{name}");
        let known =
            classify(module, name, self.allow).ok_or_else(|| CheckpointError::ForbiddenGlobal {
                origin: self.origin.to_string(),
                name: dotted.clone(),
                offset: self.op_pos,
            })?;
        self.push(Node::Global { dotted, known });
        Ok(())
    }

    fn global_of(&self, id: Id) -> Result<(String, Known), CheckpointError> {
        match self.node(id)? {
            Node::Global { dotted, known } => Ok((dotted.clone(), *known)),
            other => Err(self.err(format!("cannot call {}", other.kind()))),
        }
    }

    /// `REDUCE`: the inert meaning of calling a whitelisted global.
    fn call(&mut self, callable: Id, args: Vec<Id>) -> Result<Id, CheckpointError> {
        let (dotted, known) = self.global_of(callable)?;
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .ok_or_else(|| self.err(format!("{dotted}: missing argument {i}")))
        };
        let node = match known {
            Known::RebuildTensor => self.rebuild_tensor(&args, None)?,
            Known::RebuildTensorV3 => {
                let dtype = match self.node(arg(6)?)? {
                    Node::Global {
                        known: Known::Dtype(Some(d)),
                        ..
                    } => *d,
                    other => {
                        return Err(self.err(format!(
                            "{dotted}: unsupported dtype argument {}",
                            other.kind()
                        )));
                    }
                };
                self.rebuild_tensor(&args, Some(dtype))?
            }
            // The tensor itself stands for the parameter.
            Known::RebuildParameter => return arg(0),
            Known::RebuildFromType => {
                let (func, ty, inner) = (arg(0)?, arg(1)?, arg(2)?);
                let (ty_name, ty_known) = self.global_of(ty)?;
                if ty_known != Known::Inert {
                    return Err(self.err(format!("{dotted}: unsupported tensor type {ty_name}")));
                }
                let inner = self.items_of(inner, "rebuild arguments")?;
                return self.call(func, inner);
            }
            Known::OrderedDict => match args.first() {
                None => Node::Dict(Vec::new()),
                Some(&items) => {
                    let mut pairs = Vec::new();
                    for pair in self.items_of(items, "OrderedDict items")? {
                        match self.items_of(pair, "OrderedDict item")?.as_slice() {
                            [k, v] => pairs.push((*k, *v)),
                            _ => return Err(self.err("OrderedDict item is not a pair")),
                        }
                    }
                    Node::Dict(pairs)
                }
            },
            Known::Set => match args.first() {
                None => Node::Set(Vec::new()),
                Some(&items) => Node::Set(self.items_of(items, "set items")?),
            },
            Known::Reconstructor => {
                let (class, class_known) = self.global_of(arg(0)?)?;
                if class_known != Known::Class {
                    return Err(self.err(format!("{dotted}: cannot reconstruct {class}")));
                }
                let state = arg(2)?;
                let args = match self.node(state)? {
                    Node::None => Vec::new(),
                    _ => vec![state],
                };
                Node::Object {
                    class,
                    args,
                    state: None,
                }
            }
            Known::CodecsEncode => {
                let text = self.str_of(arg(0)?, "_codecs.encode text")?;
                let encoding = self.str_of(arg(1)?, "_codecs.encode encoding")?;
                if !matches!(encoding.as_str(), "latin1" | "latin-1") {
                    return Err(self.err(format!("_codecs.encode with encoding `{encoding}`")));
                }
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| self.err("_codecs.encode: text is not latin-1"))?;
                Node::Bytes(bytes)
            }
            Known::Size => Node::Tuple(self.items_of(arg(0)?, "torch.Size")?),
            Known::Record | Known::Class => Node::Object {
                class: dotted,
                args,
                state: None,
            },
            Known::Dtype(_) | Known::StorageType(_) | Known::Inert => {
                return Err(self.err(format!("calling {dotted} is not supported")));
            }
        };
        Ok(self.add(node))
    }

    /// `NEWOBJ`, `INST`, `OBJ`: `cls.__new__(cls, *args)` for allow-listed classes.
    fn instantiate(&mut self, class: Id, args: Vec<Id>) -> Result<Id, CheckpointError> {
        let (dotted, known) = self.global_of(class)?;
        let node = match known {
            Known::Class | Known::Record => Node::Object {
                class: dotted,
                args,
                state: None,
            },
            Known::OrderedDict => Node::Dict(Vec::new()),
            Known::Set => Node::Set(Vec::new()),
            _ => return Err(self.err(format!("cannot instantiate {dotted}"))),
        };
        Ok(self.add(node))
    }

    /// `BUILD`: records the state on an object; dict/tensor attributes are dropped.
    fn build(&mut self, target: Id, state: Id) -> Result<(), CheckpointError> {
        match self.node_mut(target)? {
            Node::Object { state: slot, .. } => {
                *slot = Some(state);
                Ok(())
            }
            // e.g. `OrderedDict._metadata` of a state dict: not needed.
            Node::Dict(_) | Node::Tensor(_) | Node::Set(_) => Ok(()),
            other => {
                let kind = other.kind();
                Err(self.err(format!("BUILD on {kind}")))
            }
        }
    }

    fn persistent(&mut self, pid: Id) -> Result<(), CheckpointError> {
        let pid_value = self.snapshot(pid, 0)?;
        match self.loader.load(&pid_value)? {
            Some(storage) => {
                self.push(Node::Storage(storage));
                Ok(())
            }
            None => Err(self.err("persistent ids are not supported in a plain pickle")),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)` (and v1, v3): a checked,
    /// file-backed view, charged to the file's budget.
    fn rebuild_tensor(
        &mut self,
        args: &[Id],
        dtype: Option<DType>,
    ) -> Result<Node, CheckpointError> {
        let [storage, offset, size, stride, ..] = args else {
            return Err(self.err("_rebuild_tensor needs (storage, offset, size, stride)"));
        };
        let Node::Storage(storage) = self.node(*storage)? else {
            let kind = self.node(*storage)?.kind();
            return Err(self.err(format!("_rebuild_tensor: expected a storage, got {kind}")));
        };
        let storage = storage.clone();
        let offset = self.int_of(*offset, "storage offset")?;
        let size = self.ints_of(*size, "tensor size")?;
        let stride = self.ints_of(*stride, "tensor stride")?;
        let tensor = view(&storage, dtype, offset, &size, &stride)
            .map_err(|m| self.err(format!("tensor from storage `{}`: {m}", storage.key)))?;
        let at = self.op_pos;
        // Charged at the size in the file (int16 is widened only when read).
        let element = dtype.map_or(storage.dtype.size(), DType::size);
        let stored = (tensor.numel() as u64).saturating_mul(element as u64);
        self.budget.charge(stored, || {
            format!(
                "the tensor {}{:?} built at pickle byte {at} from storage `{}`",
                tensor.dtype(),
                tensor.shape(),
                storage.key
            )
        })?;
        Ok(Node::Tensor(tensor))
    }

    // ---- conversion to PickleValue -----------------------------------------------------

    /// A copy of the value at `id` (used for small persistent ids).
    fn snapshot(&self, id: Id, depth: usize) -> Result<PickleValue, CheckpointError> {
        if depth > MAX_PID_DEPTH {
            return Err(self.err("persistent id nested too deeply"));
        }
        let list = |ids: &[Id]| -> Result<Vec<PickleValue>, CheckpointError> {
            ids.iter().map(|&i| self.snapshot(i, depth + 1)).collect()
        };
        Ok(match self.node(id)? {
            Node::Tuple(v) => PickleValue::Tuple(list(v)?.into()),
            Node::List(v) => PickleValue::List(list(v)?.into()),
            Node::Global { dotted, .. } => PickleValue::Global(dotted.clone()),
            Node::Str(s) if s.len() > MAX_PID_STRING => {
                return Err(self.err(format!(
                    "a {}-byte string in a persistent id (limit {MAX_PID_STRING})",
                    s.len()
                )));
            }
            Node::Str(s) => PickleValue::Str(s.clone()),
            Node::Int(v) => PickleValue::Int(*v),
            Node::None => PickleValue::None,
            other => {
                return Err(self.err(format!("unsupported {} in a persistent id", other.kind())));
            }
        })
    }

    fn into_value(self, root: Id) -> Result<PickleValue, CheckpointError> {
        let mut refs = vec![0u32; self.nodes.len()];
        for child in std::iter::once(root).chain(self.nodes.iter().flat_map(Node::children)) {
            if let Some(r) = refs.get_mut(child) {
                *r = r.saturating_add(1);
            }
        }
        let mut conv = Converter {
            origin: self.origin,
            nodes: self.nodes,
            refs,
            cache: HashMap::new(),
            budget: self.budget,
        };
        conv.convert(root)
    }
}

/// Moves arena nodes into a tree without recursion; nodes referenced more than once are
/// converted once and shared from a cache (containers, objects and tensors are
/// reference-counted; the bytes of strings copied for repeated references are charged to the
/// budget). Cycles and excessive depth are errors.
struct Converter<'a> {
    origin: &'a str,
    nodes: Vec<Node>,
    refs: Vec<u32>,
    cache: HashMap<Id, PickleValue>,
    budget: &'a mut Budget,
}

/// The bytes a clone of `v` copies (containers, objects and tensors share theirs).
fn copied_bytes(v: &PickleValue) -> u64 {
    match v {
        PickleValue::Str(s) | PickleValue::Global(s) => s.len() as u64,
        PickleValue::Bytes(b) | PickleValue::BigInt(b) => b.len() as u64,
        PickleValue::Object { class, .. } => class.len() as u64,
        _ => 0,
    }
}

/// A container whose children are being converted.
enum Shell {
    List(usize),
    Tuple(usize),
    Set(usize),
    Dict(usize),
    Object {
        class: String,
        nargs: usize,
        has_state: bool,
    },
}

enum Work {
    Enter(Id, usize),
    Exit(Id, Shell),
}

impl Converter<'_> {
    fn err(&self, message: &str) -> CheckpointError {
        CheckpointError::structure(self.origin, message)
    }

    fn convert(&mut self, root: Id) -> Result<PickleValue, CheckpointError> {
        let mut work = vec![Work::Enter(root, 0)];
        let mut values: Vec<PickleValue> = Vec::new();
        while let Some(item) = work.pop() {
            match item {
                Work::Enter(id, depth) => {
                    if depth > MAX_DEPTH {
                        return Err(self.err("pickle nesting too deep"));
                    }
                    if let Some(v) = self.cache.get(&id) {
                        let v = v.clone();
                        self.budget.charge(copied_bytes(&v), || {
                            format!("a copy of a repeated {}", v.type_name())
                        })?;
                        values.push(v);
                        continue;
                    }
                    let slot = self.nodes.get_mut(id).ok_or_else(|| {
                        CheckpointError::structure("pickle", "dangling reference")
                    })?;
                    let (shell, children) = match std::mem::replace(slot, Node::Taken) {
                        Node::List(v) => (Shell::List(v.len()), v),
                        Node::Tuple(v) => (Shell::Tuple(v.len()), v),
                        Node::Set(v) => (Shell::Set(v.len()), v),
                        Node::Dict(items) => (
                            Shell::Dict(items.len()),
                            items.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                        ),
                        Node::Object { class, args, state } => (
                            Shell::Object {
                                class,
                                nargs: args.len(),
                                has_state: state.is_some(),
                            },
                            args.into_iter().chain(state).collect(),
                        ),
                        Node::Taken => {
                            return Err(
                                self.err("self-referencing pickle structures are not supported")
                            );
                        }
                        leaf => {
                            let v = self.leaf(leaf)?;
                            self.finish(id, v, &mut values);
                            continue;
                        }
                    };
                    work.push(Work::Exit(id, shell));
                    work.extend(
                        children
                            .into_iter()
                            .rev()
                            .map(|c| Work::Enter(c, depth + 1)),
                    );
                }
                Work::Exit(id, shell) => {
                    let count = match &shell {
                        Shell::List(n) | Shell::Tuple(n) | Shell::Set(n) => *n,
                        Shell::Dict(n) => n * 2,
                        Shell::Object {
                            nargs, has_state, ..
                        } => nargs + usize::from(*has_state),
                    };
                    let at = values
                        .len()
                        .checked_sub(count)
                        .ok_or_else(|| self.err("internal: value stack underflow"))?;
                    let items = values.split_off(at);
                    let v = match shell {
                        Shell::List(_) => PickleValue::List(items.into()),
                        Shell::Tuple(_) => PickleValue::Tuple(items.into()),
                        Shell::Set(_) => PickleValue::Set(items.into()),
                        Shell::Dict(_) => {
                            let mut it = items.into_iter();
                            let mut pairs = Vec::with_capacity(count / 2);
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                pairs.push((k, v));
                            }
                            PickleValue::Dict(pairs.into())
                        }
                        Shell::Object {
                            class, has_state, ..
                        } => {
                            let mut args = items;
                            let state = if has_state { args.pop() } else { None };
                            PickleValue::Object {
                                class,
                                args: args.into(),
                                state: Arc::new(state.unwrap_or(PickleValue::None)),
                            }
                        }
                    };
                    self.finish(id, v, &mut values);
                }
            }
        }
        match (values.pop(), values.is_empty()) {
            (Some(v), true) => Ok(v),
            _ => Err(self.err("internal: conversion left extra values")),
        }
    }

    fn finish(&mut self, id: Id, value: PickleValue, values: &mut Vec<PickleValue>) {
        if self.refs.get(id).copied().unwrap_or(0) > 1 {
            self.cache.insert(id, value.clone());
        }
        values.push(value);
    }

    fn leaf(&mut self, node: Node) -> Result<PickleValue, CheckpointError> {
        Ok(match node {
            Node::None => PickleValue::None,
            Node::Bool(b) => PickleValue::Bool(b),
            Node::Int(v) => PickleValue::Int(v),
            Node::BigInt(b) => PickleValue::BigInt(b),
            Node::Float(v) => PickleValue::Float(v),
            Node::Str(s) => PickleValue::Str(s),
            Node::Bytes(b) => PickleValue::Bytes(b),
            Node::Global { dotted, .. } => PickleValue::Global(dotted),
            Node::Tensor(t) => PickleValue::Tensor(t),
            // A bare storage becomes a 1-d tensor of its elements.
            Node::Storage(s) => {
                let n = s.len / s.dtype.size() as u64;
                let n = i64::try_from(n).map_err(|_| self.err("storage too large"))?;
                let t = view(&s, None, 0, &[n], &[1]).map_err(|e| self.err(&e))?;
                self.budget
                    .charge(s.len, || format!("storage `{}` used as a tensor", s.key))?;
                PickleValue::Tensor(t)
            }
            other => return Err(self.err(&format!("internal: {} is not a leaf", other.kind()))),
        })
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_node(bytes: Vec<u8>) -> Node {
    if bytes.is_empty() {
        return Node::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
        for (dst, src) in buf.iter_mut().zip(&bytes) {
            *dst = *src;
        }
        return Node::Int(i64::from_le_bytes(buf));
    }
    Node::BigInt(bytes)
}

/// A protocol-0 `STRING` argument: `'text'` or `"text"` without escapes.
fn unquote(line: &str) -> Option<&str> {
    let inner = line
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .or_else(|| line.strip_prefix('"').and_then(|l| l.strip_suffix('"')))?;
    (!inner.contains('\\')).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<PickleValue, CheckpointError> {
        unpickle(bytes, &ClassAllowList::new(["m.C"]))
    }

    fn err(bytes: &[u8]) -> String {
        run(bytes).unwrap_err().to_string()
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(err(b"").contains("without STOP"));
        assert!(err(b"\x80\x02").contains("without STOP"));
        assert!(err(b"0.").contains("underflow"));
        assert!(err(b"(0.").contains("underflow"));
        assert!(err(b"h\x05.").contains("memo key 5"));
        assert!(err(b"\xff.").contains("unknown opcode 0xff"));
        assert!(err(b"\x80\x09N.").contains("protocol 9"));
        assert!(err(b"X\xff\xff\xff\xff").contains("exceeds"));
        assert!(err(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff").contains("exceeds"));
        assert!(err(b"\x95\xff\x00\x00\x00\x00\x00\x00\x00N.").contains("frame"));
        assert!(err(b"\x8b\xff\xff\xff\xff").contains("negative"));
        assert!(err(b"\x97.").contains("out-of-band"));
        assert!(err(b"\x82\x01.").contains("extension"));
        assert!(err(b"t.").contains("MARK"));
        assert!(err(b"(K\x01d.").contains("odd"));
        assert!(err(b"K\x01K\x02a.").contains("APPEND to int"));
        assert!(err(b"NK\x01R.").contains("must be a tuple"));
        assert!(err(b"N)R.").contains("cannot call None"));
        assert!(err(b"X\x02\x00\x00\x00\xff\xfe.").contains("UTF-8"));
        assert!(err(b"NQ.").contains("persistent ids"));
        // A list containing itself.
        assert!(err(b"]q\x00h\x00a.").contains("self-referencing"));
        // Nesting far too deep.
        let mut deep = vec![b'K', 1];
        deep.extend(std::iter::repeat_n(0x85u8, 5000));
        deep.push(b'.');
        assert!(err(&deep).contains("deep"));
        // Just under the limit is fine (and cloning, comparing, dropping it does not overflow).
        let mut ok = vec![b'K', 1];
        ok.extend(std::iter::repeat_n(0x85u8, MAX_DEPTH));
        ok.push(b'.');
        let v = run(&ok).unwrap();
        assert_eq!(v.clone(), v);
    }

    #[test]
    fn globals_are_whitelisted() {
        let e = err(b"cbuiltins\neval\n.");
        assert!(e.contains("forbidden global `builtins.eval`"), "{e}");
        assert!(e.contains("at byte 0"), "{e}");
        let e = err(b"\x8c\nsubprocess\x8c\x05Popen\x93.");
        assert!(e.contains("forbidden global `subprocess.Popen`"), "{e}");
        // Whitelisted globals that are not callables cannot be called.
        assert!(err(b"ctorch\nfloat32\n)R.").contains("not supported"));
        assert_eq!(
            run(b"ctorch\nfloat32\n.").unwrap(),
            PickleValue::Global("torch.float32".into())
        );
    }

    #[test]
    fn objects_are_inert_records() {
        // NEWOBJ m.C() then BUILD {'n': 3}.
        let v = run(b"cm\nC\n)\x81}X\x01\x00\x00\x00nK\x03sb.").unwrap();
        assert_eq!(v.class_name(), Some("m.C"));
        assert_eq!(v.get("n").and_then(PickleValue::as_int), Some(3));
        // copyreg._reconstructor(m.C, object, None).
        let v = run(b"ccopy_reg\n_reconstructor\ncm\nC\nc__builtin__\nobject\nN\x87R.").unwrap();
        assert_eq!(v.class_name(), Some("m.C"));
        // torch.device('cuda', 0).
        let v = run(b"ctorch\ndevice\nX\x04\x00\x00\x00cudaK\x00\x86R.").unwrap();
        assert_eq!(v.class_name(), Some("torch.device"));
        // OrderedDict([('a', 1)]) and protocol-2 bytes via _codecs.encode.
        let v = run(b"ccollections\nOrderedDict\n]X\x01\x00\x00\x00aK\x01\x86a\x85R.").unwrap();
        assert_eq!(v.get("a").and_then(PickleValue::as_int), Some(1));
        let v = run(b"c_codecs\nencode\nX\x03\x00\x00\x00\xc3\xbfaX\x06\x00\x00\x00latin1\x86R.")
            .unwrap();
        assert_eq!(v, PickleValue::Bytes(vec![0xff, b'a']));
    }

    #[test]
    fn memoized_containers_see_later_mutation() {
        // d = {}; memo[0] = d; l = [d]; memo[1] = l; then d['k'] = 1; result (d, l).
        let v = run(b"}q\x00]h\x00aq\x010X\x01\x00\x00\x00kK\x01sh\x01\x86.");
        let v = v.unwrap();
        let PickleValue::Tuple(items) = v else {
            panic!("{v:?}")
        };
        let want =
            PickleValue::Dict(vec![(PickleValue::Str("k".into()), PickleValue::Int(1))].into());
        assert_eq!(items[1], PickleValue::List(vec![want.clone()].into()));
        assert_eq!(items[0], want);
    }
}
