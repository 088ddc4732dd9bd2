//! Issue 13's reproducers for the readers, crafted here (no fixture files): memory bombs from
//! tiny files, overlapping zip entries, non-regular files, and the errors a user must be able
//! to act on. Each test asserts the clean error (or the shared result), not just "no panic".

use super::*;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::Arc;

/// A tiny pickle assembler: opcodes in, bytes out.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: i32) -> &mut Self {
        self.0.push(b'J');
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn put(&mut self, key: u32) -> &mut Self {
        self.0.push(b'r');
        self.0.extend_from_slice(&key.to_le_bytes());
        self
    }
    fn get(&mut self, key: u32) -> &mut Self {
        self.0.push(b'j');
        self.0.extend_from_slice(&key.to_le_bytes());
        self
    }
    /// `('storage', torch.FloatStorage, key, 'cpu', numel)` as a persistent id.
    fn storage(&mut self, key: &str, numel: i32) -> &mut Self {
        self.op(b"(")
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
    }
    /// `_rebuild_tensor_v2(<storage from memo>, 0, size, stride)`.
    fn rebuild(&mut self, storage_memo: u32, size: i32, stride: i32) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .get(storage_memo)
            .int(0)
            .int(size)
            .op(b"\x85")
            .int(stride)
            .op(b"\x85t")
            .op(b"R")
    }
    fn bytes(&mut self) -> Vec<u8> {
        let mut out = b"\x80\x02".to_vec();
        out.extend_from_slice(&self.0);
        out.push(b'.');
        out
    }
}

/// A `torch.save`-shaped zip: `archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`.
fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("archive/data.pkl", options).unwrap();
    w.write_all(pkl).unwrap();
    w.start_file("archive/byteorder", options).unwrap();
    w.write_all(b"little").unwrap();
    for (key, data) in storages {
        w.start_file(format!("archive/data/{key}"), options)
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_err(path: &Path) -> String {
    read_pytorch(path, &ClassAllowList::none())
        .unwrap_err()
        .to_string()
}

/// Lists that reference each other through the memo, each level twice ("billion laughs"):
/// 2^60 leaves if copied; shared, it is 60 small lists.
#[test]
fn issue13_memo_references_stay_shared() {
    let mut p = Pickle::default();
    p.op(b"]").int(1).op(b"a").put(0);
    for level in 1..=60u32 {
        p.op(b"(")
            .get(level - 1)
            .get(level - 1)
            .op(b"l")
            .put(level)
            .op(b"0");
    }
    p.get(60);
    let v = unpickle(&p.bytes(), &ClassAllowList::none()).unwrap();
    let mut v = &v;
    for _ in 0..60 {
        let items = v.as_list().unwrap();
        assert_eq!(items.len(), 2);
        let (PickleValue::List(a), PickleValue::List(b)) = (&items[0], &items[1]) else {
            panic!("{items:?}")
        };
        assert!(Arc::ptr_eq(a, b), "the two references are one list");
        v = &items[0];
    }
}

/// A 1 MiB string referenced 100 times through the memo: copying it would cost 100 MiB,
/// more than the file's budget.
#[test]
fn issue13_repeated_large_strings_are_charged() {
    let mut p = Pickle::default();
    p.str(&"x".repeat(1 << 20)).put(0).op(b"0").op(b"(");
    for _ in 0..100 {
        p.get(0);
    }
    p.op(b"l");
    let e = unpickle(&p.bytes(), &ClassAllowList::none())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a copy of a repeated str") && e.contains("over the limit of"),
        "{e}"
    );
}

/// One REDUCE argument list of 200k references, used 10k times: the arena would need 2·10^9
/// references; the object limit stops it early.
#[test]
fn issue13_cloned_argument_lists_are_limited() {
    let mut p = Pickle::default();
    p.op(b"(").op(b"N");
    p.op(&[b'2'; 200_000]);
    p.op(b"t").put(0).op(b"0");
    p.global("builtins", "set").put(1).op(b"0");
    for _ in 0..10_000 {
        p.get(1).get(0).op(b"\x85").op(b"R0");
    }
    p.op(b"N");
    let e = unpickle(&p.bytes(), &ClassAllowList::none())
        .unwrap_err()
        .to_string();
    assert!(e.contains("objects and references"), "{e}");
}

/// One tensor referenced 10,000 times through the memo is one tensor: read once, shared.
#[test]
fn issue13_one_tensor_referenced_many_times_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut p = Pickle::default();
    p.storage("0", 256 * 1024).put(0).op(b"0");
    p.rebuild(0, 256 * 1024, 1).put(1).op(b"0");
    p.op(b"(");
    for _ in 0..10_000 {
        p.get(1);
    }
    p.op(b"l");
    let path = write(&dir, "shared.pt", &torch_zip(&p.bytes(), &[("0", &data)]));
    let v = read_pytorch(&path, &ClassAllowList::none()).unwrap();
    let items = v.as_list().unwrap();
    assert_eq!(items.len(), 10_000);
    let first = items[0].as_tensor().unwrap();
    assert!(first.is_file_backed());
    assert_eq!(first.bytes().unwrap().as_ref(), data.as_slice());
}

/// 200 stride-0 views of 64 MiB over a 4-byte storage: the first fits the file's allowance,
/// the second is refused, naming the tensor and the limit.
#[test]
fn issue13_stride0_views_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pickle::default();
    p.storage("0", 1).put(0).op(b"0").op(b"(");
    for _ in 0..200 {
        p.rebuild(0, 16 << 20, 0);
    }
    p.op(b"l");
    let path = write(
        &dir,
        "stride0.pt",
        &torch_zip(&p.bytes(), &[("0", &[0u8; 4])]),
    );
    let e = read_err(&path);
    assert!(
        e.contains("stride0.pt")
            && e.contains("[16777216]")
            && e.contains("from storage `0`")
            && e.contains("over the limit of")
            && e.contains("+ 64 MiB"),
        "{e}"
    );
}

/// 2,000 `_rebuild_tensor_v2` calls over one 64 KiB storage: 125 MiB of tensors from a
/// 0.2 MB file is refused.
#[test]
fn issue13_many_rebuilds_of_one_storage_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pickle::default();
    p.storage("0", 16 * 1024).put(0).op(b"0").op(b"(");
    for _ in 0..2000 {
        p.rebuild(0, 16 * 1024, 1);
    }
    p.op(b"l");
    let path = write(
        &dir,
        "rebuilds.pt",
        &torch_zip(&p.bytes(), &[("0", &[0u8; 64 * 1024])]),
    );
    let e = read_err(&path);
    assert!(e.contains("over the limit of"), "{e}");
    let data = vec![0u8; 1 << 20];
    // The same storage viewed a few times (tied weights) is fine.
    let mut p = Pickle::default();
    p.storage("0", 256 * 1024).put(0).op(b"0").op(b"(");
    for _ in 0..3 {
        p.rebuild(0, 256 * 1024, 1);
    }
    p.op(b"l");
    let path = write(&dir, "tied.pt", &torch_zip(&p.bytes(), &[("0", &data)]));
    assert_eq!(
        read_pytorch(&path, &ClassAllowList::none())
            .unwrap()
            .as_list()
            .unwrap()
            .len(),
        3
    );
}

/// Duplicates the central-directory record of `entry` under `count` new names, all pointing
/// at the same local header and blob, and fixes the end-of-central-directory record.
fn with_aliases(zip: &[u8], entry: &str, count: usize) -> Vec<u8> {
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()) as usize;
    let (cd_size, cd_start) = (u32_at(eocd + 12), u32_at(eocd + 16));
    let mut records = zip[cd_start..cd_start + cd_size].to_vec();
    let mut at = 0;
    let mut found = None;
    while at < cd_size {
        let n = u16_at(cd_start + at + 28);
        let (m, k) = (u16_at(cd_start + at + 30), u16_at(cd_start + at + 32));
        let len = 46 + n + m + k;
        if &zip[cd_start + at + 46..cd_start + at + 46 + n] == entry.as_bytes() {
            found = Some(zip[cd_start + at..cd_start + at + len].to_vec());
        }
        at += len;
    }
    let record = found.unwrap();
    let entries = u16_at(eocd + 10) + count;
    for i in 0..count {
        let name = format!("archive/data/alias{i}");
        let mut r = record[..46].to_vec();
        r[28..30].copy_from_slice(&(name.len() as u16).to_le_bytes());
        r[30..34].copy_from_slice(&[0; 4]);
        r.extend_from_slice(name.as_bytes());
        records.extend_from_slice(&r);
    }
    let mut out = zip[..cd_start].to_vec();
    out.extend_from_slice(&records);
    let mut end = zip[eocd..].to_vec();
    end[8..10].copy_from_slice(&(entries as u16).to_le_bytes());
    end[10..12].copy_from_slice(&(entries as u16).to_le_bytes());
    end[12..16].copy_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&end);
    out
}

/// A central directory whose 3,000 entries all point at one stored blob is refused.
#[test]
fn issue13_overlapping_zip_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pickle::default();
    p.storage("0", 4).put(0).op(b"0");
    p.rebuild(0, 4, 1);
    let zip = torch_zip(&p.bytes(), &[("0", &[0u8; 16])]);
    // The unaltered archive reads.
    let path = write(&dir, "ok.pt", &zip);
    read_pytorch(&path, &ClassAllowList::none()).unwrap();
    let path = write(
        &dir,
        "aliases.pt",
        &with_aliases(&zip, "archive/data/0", 3000),
    );
    let e = read_err(&path);
    assert!(
        e.contains("aliases.pt") && e.contains("overlaps entry `archive/data/0`"),
        "{e}"
    );
}

/// A zip cut in its last bytes says "truncated", not "i/o error".
#[test]
fn issue13_truncated_zip_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let zip = torch_zip(&Pickle::default().op(b"N").bytes(), &[]);
    for cut in [1, 5, 21] {
        let path = write(&dir, "cut.pt", &zip[..zip.len() - cut]);
        let e = read_err(&path);
        assert!(
            e.contains("cut.pt") && e.contains("truncated"),
            "cut {cut}: {e}"
        );
        assert!(!e.ends_with("i/o error"), "{e}");
    }
}

/// `/dev/zero`, `/dev/urandom`, a FIFO and a directory are refused before anything reads them
/// (opening a FIFO would block; reading the devices would never end).
#[cfg(unix)]
#[test]
fn issue13_non_regular_files_are_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pt");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for (path, kind) in [
        (Path::new("/dev/zero"), "character device"),
        (Path::new("/dev/urandom"), "character device"),
        (fifo.as_path(), "FIFO"),
        (dir.path(), "directory"),
    ] {
        for e in [
            read_err(path),
            read_safetensors(path).unwrap_err().to_string(),
            crate::bundle_writer::source_file("checkpoint", path)
                .unwrap_err()
                .to_string(),
        ] {
            assert!(
                e.contains(&path.display().to_string()) && e.contains(kind),
                "{e}"
            );
        }
    }
}

/// The dVAE's `encoder.pkl` given as a DALLE-pytorch checkpoint names the wrong family, not a
/// "forbidden global".
#[test]
fn issue13_dvae_pickle_given_to_dalle_pytorch_names_the_family() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../python-free-tests/fixtures/dvae_small/encoder.pkl");
    let Err(e) = crate::families::dalle_pytorch::load(&path) else {
        panic!("encoder.pkl loaded as a DALLE-pytorch checkpoint")
    };
    let e = e.to_string();
    assert!(
        e.contains("encoder.pkl")
            && e.contains("OpenAI dVAE file")
            && e.contains("dalle-export openai-dvae")
            && !e.contains("forbidden"),
        "{e}"
    );
}

/// The other files an export reads (tokenizer, CLIP config) are refused the same way.
#[cfg(unix)]
#[test]
fn issue13_non_regular_side_files_are_refused() {
    let e = crate::tokenizer::load_tokenizer_json(Path::new("/dev/zero")).unwrap_err();
    assert!(format!("{e:?}").contains("character device"), "{e:?}");
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("config.json"))
        .status()
        .unwrap();
    assert!(status.success());
    let Err(e) = crate::families::clip::load(dir.path()) else {
        panic!("a FIFO config.json loaded")
    };
    assert!(e.to_string().contains("FIFO"), "{e}");
}
