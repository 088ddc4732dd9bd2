//! Deterministic replay of the fuzz corpus on stable Rust (CI has no nightly, so no libFuzzer).
//!
//! Every committed input under `fuzz/seeds/<target>/` (minimized campaign corpora, fixture
//! seeds, reproducers of fixed bugs) and [`MUTATIONS`] seeded mutants of each go through the same
//! function the libFuzzer target calls (`python_free_tests::fuzz_targets::Target::run`), in a
//! child process (`fuzz-replay`) that runs under an address-space rlimit of [`MEMORY_CAP_MIB`]
//! (`ulimit -v`, like libFuzzer's `-rss_limit_mb=2048` in campaigns) and a wall-clock limit:
//! a panic, an allocation the cap refuses (Rust aborts) or a hang fails the test and the
//! child's last stderr line names the input.
//!
//! `fuzz/regressions/<target>/` holds reproducers of known reader bugs not fixed yet (none
//! now: the `.npy` header-length reproducer is fixed and kept as a seed);
//! [`known_regressions`] replays them. Seeded
//! mutants easily hit those bugs again, so for a target with open reproducers the default test
//! replays its seeds alone and [`known_regressions`] adds the mutants.

use python_free_tests::fuzz_targets::Target;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address space the child may map (campaigns: `-rss_limit_mb=2048`).
const MEMORY_CAP_MIB: u64 = 2048;

/// Seeded mutants per committed input (the seed is fixed: the same inputs on every run).
const MUTATIONS: u64 = 40;

/// The mutation seed.
const SEED: u64 = 13;

/// Wall-clock limit for one child.
const TIME_LIMIT: Duration = Duration::from_secs(300);

fn fuzz_dir(sub: &str, target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(sub)
        .join(target.name())
}

/// Runs `fuzz-replay` on `args` under the memory cap and time limit; `Err` carries why it
/// failed and the tail of its stderr.
fn replay(target: Target, args: &[&str], inputs: &Path) -> Result<String, String> {
    let script = format!("ulimit -v {} && exec \"$0\" \"$@\"", MEMORY_CAP_MIB * 1024);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_fuzz-replay"))
        .arg(target.name())
        .args(args)
        .arg(inputs)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start fuzz-replay");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for fuzz-replay") {
            break Some(status);
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let stderr = reader.join().unwrap_or_default();
    // From the last input's name on: the input and what happened to it.
    let lines: Vec<&str> = stderr.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("input "))
        .unwrap_or(0);
    let tail: Vec<&str> = lines.iter().skip(from).take(12).copied().collect();
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!(
            "{} failed ({s}) on {}:\n{}",
            target.name(),
            inputs.display(),
            tail.join("\n")
        )),
        None => Err(format!(
            "{} ran past {TIME_LIMIT:?} on {}:\n{}",
            target.name(),
            inputs.display(),
            tail.join("\n")
        )),
    }
}

/// The known-bug reproducers of `target` (files of `fuzz/regressions/<target>/`).
fn known_bugs(target: Target) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir("regressions", target)) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.retain(|f| f.is_file());
    files.sort();
    files
}

/// Replays the seeds of `target`, with mutants unless it has open known bugs.
fn replay_seeds(target: Target) {
    let mutants = if known_bugs(target).is_empty() {
        MUTATIONS
    } else {
        eprintln!(
            "{}: known bugs open (fuzz/regressions/): seeds only, mutants in known_regressions",
            target.name()
        );
        0
    };
    if let Err(e) = replay_seeds_with(target, mutants) {
        panic!("{e}");
    }
}

fn replay_seeds_with(target: Target, mutants: u64) -> Result<(), String> {
    let dir = fuzz_dir("seeds", target);
    let count = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .count();
    assert!(count > 0, "{} has no seeds", dir.display());
    let mutants = mutants.to_string();
    let seed = SEED.to_string();
    let out = replay(target, &["--mutations", &mutants, "--seed", &seed], &dir)?;
    eprint!("{out}");
    Ok(())
}

#[test]
fn pytorch() {
    replay_seeds(Target::Pytorch);
}

#[test]
fn pickle() {
    replay_seeds(Target::Pickle);
}

#[test]
fn safetensors() {
    replay_seeds(Target::Safetensors);
}

#[test]
fn npy() {
    replay_seeds(Target::Npy);
}

#[test]
fn manifest() {
    replay_seeds(Target::Manifest);
}

#[test]
fn tokenizer() {
    replay_seeds(Target::Tokenizer);
}

#[test]
fn prompt() {
    replay_seeds(Target::Prompt);
}

#[test]
fn image() {
    replay_seeds(Target::Image);
}

/// Every target has a test above and a seed folder.
#[test]
fn every_target_is_replayed() {
    for target in Target::ALL {
        assert!(
            fuzz_dir("seeds", target).is_dir(),
            "no seeds for {}",
            target.name()
        );
        let source = include_str!("fuzz_replay.rs");
        assert!(
            source.contains(&format!("replay_seeds(Target::{target:?})")),
            "no replay test for {}",
            target.name()
        );
    }
}

/// Reproducers of known reader bugs (memory-limit crashes, panics) that the `hostile-readers`
/// and `hostile-checks` branches fix, each in its own child so every one is reported, and the
/// seeded mutants of the targets that have them.
#[test]
fn known_regressions() {
    let mut failures = vec![];
    let mut total = 0;
    for target in Target::ALL {
        let files = known_bugs(target);
        if files.is_empty() {
            continue;
        }
        for file in files {
            total += 1;
            if let Err(e) = replay(target, &[], &file) {
                failures.push(e);
            }
        }
        total += 1;
        if let Err(e) = replay_seeds_with(target, MUTATIONS) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} known-regression runs still fail:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
