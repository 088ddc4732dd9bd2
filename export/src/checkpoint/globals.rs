//! The whitelist of pickle globals.
//!
//! A pickle can name any importable Python object; unpickling in Python calls it. Here every
//! `GLOBAL` / `STACK_GLOBAL` is looked up in a fixed table of known torch and Python names
//! (each with inert semantics implemented in Rust) or in a caller-provided [`ClassAllowList`]
//! of classes that become records. Anything else is refused when it is named, before any use.

use dalle_bundle::DType;
use std::collections::BTreeSet;

/// The classes inside the released OpenAI dVAE pickles (models.md §1.6).
pub const DVAE_CLASSES: &[&str] = &[
    "dall_e.encoder.Encoder",
    "dall_e.encoder.EncoderBlock",
    "dall_e.decoder.Decoder",
    "dall_e.decoder.DecoderBlock",
    "dall_e.utils.Conv2d",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.upsampling.Upsample",
];

/// Common `torch.nn` module classes, for whole pickled torch models.
pub const TORCH_NN_CLASSES: &[&str] = &[
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.container.ParameterList",
    "torch.nn.modules.container.ParameterDict",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.GELU",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.activation.Softmax",
    "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.conv.ConvTranspose2d",
    "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.normalization.GroupNorm",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.sparse.Embedding",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.pooling.AvgPool2d",
    "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.flatten.Flatten",
];

/// Plain Python record classes sometimes found next to weights (training arguments).
pub const RECORD_CLASSES: &[&str] = &["argparse.Namespace"];

/// Classes (dotted `module.Name`) that may appear as inert records in a pickle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassAllowList {
    classes: BTreeSet<String>,
}

impl ClassAllowList {
    /// No classes: only tensors, containers and scalars (enough for state dicts).
    pub fn none() -> Self {
        Self::default()
    }

    /// The given dotted class names.
    pub fn new<I, S>(classes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClassAllowList {
            classes: classes.into_iter().map(Into::into).collect(),
        }
    }

    /// [`DVAE_CLASSES`].
    pub fn dvae() -> Self {
        Self::new(DVAE_CLASSES.iter().copied())
    }

    /// [`TORCH_NN_CLASSES`] plus [`RECORD_CLASSES`].
    pub fn torch_nn() -> Self {
        Self::new(TORCH_NN_CLASSES.iter().chain(RECORD_CLASSES).copied())
    }

    /// This list plus `classes`.
    pub fn with(mut self, classes: &[&str]) -> Self {
        self.classes.extend(classes.iter().map(|c| c.to_string()));
        self
    }

    pub fn contains(&self, class: &str) -> bool {
        self.classes.contains(class)
    }
}

/// What a whitelisted global means to the unpickler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// `torch._utils._rebuild_tensor` (old, 4 args) and `_rebuild_tensor_v2`.
    RebuildTensor,
    /// `torch._utils._rebuild_tensor_v3`: an untyped storage plus an explicit dtype.
    RebuildTensorV3,
    /// `_rebuild_parameter` / `_rebuild_parameter_with_state`: returns its first argument.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`.
    RebuildFromType,
    OrderedDict,
    Set,
    /// `copyreg._reconstructor(cls, base, state)`: an allow-listed class instance.
    Reconstructor,
    /// `_codecs.encode(str, 'latin1')`: how protocol 2 pickles `bytes`.
    CodecsEncode,
    /// `torch.Size(tuple)`.
    Size,
    /// `torch.device(...)`, `builtins.slice(...)`: inert records with constructor args.
    Record,
    /// A dtype such as `torch.float32`.
    Dtype(Option<DType>),
    /// A storage type such as `torch.FloatStorage`; `None` for element types we cannot hold.
    StorageType(Option<StorageDtype>),
    /// Values that only appear as arguments (`builtins.object`, `torch.Tensor`, ...).
    Inert,
    /// A class from the caller's [`ClassAllowList`].
    Class,
}

/// Element type of a storage: a bundle dtype, or int16 (widened to int32 when loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageDtype {
    Plain(DType),
    I16,
}

impl StorageDtype {
    pub(crate) fn size(self) -> usize {
        match self {
            StorageDtype::Plain(d) => d.size(),
            StorageDtype::I16 => 2,
        }
    }
}

/// Looks up the dotted name `module.name`.
pub(crate) fn classify(module: &str, name: &str, allow: &ClassAllowList) -> Option<Known> {
    let known = match (module, name) {
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Known::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v3") => Known::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Known::RebuildParameter
        }
        ("torch._tensor", "_rebuild_from_type_v2") => Known::RebuildFromType,
        ("collections", "OrderedDict") => Known::OrderedDict,
        ("builtins" | "__builtin__", "set" | "frozenset") => Known::Set,
        ("builtins" | "__builtin__", "slice") => Known::Record,
        ("builtins" | "__builtin__", "object") => Known::Inert,
        ("copyreg" | "copy_reg", "_reconstructor") => Known::Reconstructor,
        ("_codecs", "encode") => Known::CodecsEncode,
        ("torch", "Size") => Known::Size,
        ("torch", "device") => Known::Record,
        ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => Known::Inert,
        ("torch", dtype) if dtype_by_name(dtype).is_some() => {
            Known::Dtype(dtype_by_name(dtype).flatten())
        }
        ("torch" | "torch.cuda", storage) if storage_dtype_by_name(storage).is_some() => {
            Known::StorageType(storage_dtype_by_name(storage).flatten())
        }
        ("torch.storage", "UntypedStorage" | "_UntypedStorage") => {
            Known::StorageType(Some(StorageDtype::Plain(DType::U8)))
        }
        _ if allow.contains(&format!("{module}.{name}")) => Known::Class,
        _ => return None,
    };
    Some(known)
}

/// `Some(None)` for a dtype name torch has but we cannot hold (complex, float8, ...).
fn dtype_by_name(name: &str) -> Option<Option<DType>> {
    Some(Some(match name {
        "float32" | "float" => DType::F32,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" | "double" => DType::F64,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        "int16" | "short" | "complex64" | "complex128" | "cfloat" | "cdouble" | "uint16"
        | "uint32" | "uint64" | "float8_e4m3fn" | "float8_e5m2" | "qint8" | "quint8" | "qint32" => {
            return Some(None);
        }
        _ => return None,
    }))
}

/// The element type of a dtype global, as a storage type (int16 kept apart).
pub(crate) fn storage_dtype_of_dtype_name(name: &str) -> Option<StorageDtype> {
    match name.strip_prefix("torch.")? {
        "int16" | "short" => Some(StorageDtype::I16),
        other => dtype_by_name(other).flatten().map(StorageDtype::Plain),
    }
}

fn storage_dtype_by_name(name: &str) -> Option<Option<StorageDtype>> {
    let plain = |d| Some(Some(StorageDtype::Plain(d)));
    match name {
        "FloatStorage" => plain(DType::F32),
        "HalfStorage" => plain(DType::F16),
        "BFloat16Storage" => plain(DType::BF16),
        "DoubleStorage" => plain(DType::F64),
        "LongStorage" => plain(DType::I64),
        "IntStorage" => plain(DType::I32),
        "ShortStorage" => Some(Some(StorageDtype::I16)),
        "CharStorage" => plain(DType::I8),
        "ByteStorage" | "UntypedStorage" => plain(DType::U8),
        "BoolStorage" => plain(DType::Bool),
        "ComplexFloatStorage"
        | "ComplexDoubleStorage"
        | "QInt8Storage"
        | "QUInt8Storage"
        | "QInt32Storage" => Some(None),
        _ => None,
    }
}

/// The storage element type a global used in a persistent id stands for, if any: a storage
/// type (`torch.FloatStorage`) or, in newer torch, a dtype (`torch.float32`).
pub(crate) fn storage_dtype_of_global(dotted: &str) -> Option<StorageDtype> {
    let (module, name) = dotted.rsplit_once('.')?;
    match classify(module, name, &ClassAllowList::none())? {
        Known::StorageType(d) => d,
        Known::Dtype(_) => storage_dtype_of_dtype_name(dotted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist() {
        let none = ClassAllowList::none();
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor_v2", &none),
            Some(Known::RebuildTensor)
        );
        assert_eq!(classify("os", "system", &none), None);
        assert_eq!(classify("builtins", "eval", &none), None);
        assert_eq!(classify("posix", "system", &none), None);
        assert_eq!(classify("dall_e.utils", "Conv2d", &none), None);
        assert_eq!(
            classify("dall_e.utils", "Conv2d", &ClassAllowList::dvae()),
            Some(Known::Class)
        );
        assert_eq!(
            storage_dtype_of_global("torch.BFloat16Storage"),
            Some(StorageDtype::Plain(DType::BF16))
        );
        assert_eq!(
            storage_dtype_of_global("torch.float16"),
            Some(StorageDtype::Plain(DType::F16))
        );
        assert_eq!(
            storage_dtype_of_global("torch.int16"),
            Some(StorageDtype::I16)
        );
        assert_eq!(storage_dtype_of_global("torch.complex64"), None);
        assert_eq!(storage_dtype_of_global("os.system"), None);
        assert!(ClassAllowList::torch_nn().contains("argparse.Namespace"));
    }
}
