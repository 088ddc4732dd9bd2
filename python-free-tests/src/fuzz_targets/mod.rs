//! One function per fuzz target, shared by the libFuzzer targets in `fuzz/` (campaigns, nightly)
//! and the stable replay (`fuzz-replay` binary, `fuzz_replay` tests), so both check the same
//! thing.
//!
//! Each function takes arbitrary bytes, feeds them to one reader of hostile input the way the
//! programs do (through the public, path-based entry points: the bytes go to a scratch file
//! first, [`scratch`]), and checks what the reader returns. The property is "no panic, no hang,
//! memory under a cap, and an `Ok` result is self-consistent"; errors are the expected outcome
//! for almost every input. The memory cap is enforced outside: libFuzzer's
//! `-rss_limit_mb`/`-malloc_limit_mb` in campaigns, an address-space rlimit on the replay's
//! child process in tests (`fuzz-replay`).

mod image;
mod manifest;
pub mod mutate;
mod npy;
mod pickle;
mod prompt;
mod pytorch;
mod safetensors;
pub mod scratch;
mod tokenizer;

/// A fuzz target: one reader of hostile input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `torch.save` zip archives through `read_pytorch` and the state-dict walks.
    Pytorch,
    /// The pickle VM alone (`unpickle`), without the zip container.
    Pickle,
    /// safetensors files (`read_safetensors`).
    Safetensors,
    /// `.npy` image tokens (`dalle-ort decode` input).
    Npy,
    /// `manifest.json` parse + validation, typed attributes, and the manifest/graph contract.
    Manifest,
    /// `tokenizer.json` files, at export (`load_tokenizer_json`) and at run time
    /// (`TextTokenizer::open` + encode/decode).
    Tokenizer,
    /// Prompts (HTTP clients and the command line) through the shipped tokenizers.
    Prompt,
    /// Image decoding: `dalle-ort encode` input and `/v1/images/edits` uploads.
    Image,
}

impl Target {
    /// Every target, in the order of `fuzz/Cargo.toml`.
    pub const ALL: [Target; 8] = [
        Target::Pytorch,
        Target::Pickle,
        Target::Safetensors,
        Target::Npy,
        Target::Manifest,
        Target::Tokenizer,
        Target::Prompt,
        Target::Image,
    ];

    /// The target's name: its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Pytorch => "pytorch",
            Target::Pickle => "pickle",
            Target::Safetensors => "safetensors",
            Target::Npy => "npy",
            Target::Manifest => "manifest",
            Target::Tokenizer => "tokenizer",
            Target::Prompt => "prompt",
            Target::Image => "image",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on one input; panics (the failure libFuzzer and the replay catch) when
    /// the reader panics or returns something inconsistent.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Pytorch => pytorch::run(data),
            Target::Pickle => pickle::run(data),
            Target::Safetensors => safetensors::run(data),
            Target::Npy => npy::run(data),
            Target::Manifest => manifest::run(data),
            Target::Tokenizer => tokenizer::run(data),
            Target::Prompt => prompt::run(data),
            Target::Image => image::run(data),
        }
    }
}
