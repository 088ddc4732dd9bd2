//! `fuzz-replay`: runs fuzz-target inputs on stable Rust, without libFuzzer.
//!
//! ```text
//! fuzz-replay TARGET [--mutations N] [--seed S] FILE_OR_DIR...
//! fuzz-replay TARGET --emit-mutant SEED INDEX FILE OUT
//! ```
//!
//! Each file (a directory: its files, sorted) goes through the same function the libFuzzer
//! target calls ([`Target::run`]); with `--mutations N`, so do N seeded mutants of each file
//! ([`mutate::mutant`]). Before each input its name goes to stderr, so when a panic, an abort on
//! a failed allocation (the `fuzz_replay` tests run this under an address-space rlimit) or a
//! timeout kills the process, the last stderr line names the input. `--emit-mutant` writes one
//! mutant to a file, to keep it as a regression or hand it to the libFuzzer target.

use anyhow::{Context, Result, bail};
use python_free_tests::fuzz_targets::{Target, mutate};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fuzz-replay TARGET [--mutations N] [--seed S] FILE_OR_DIR... \
                 | fuzz-replay TARGET --emit-mutant SEED INDEX FILE OUT";
    let name = args.next().context(usage)?;
    let target = Target::from_name(&name).with_context(|| {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        format!("unknown target `{name}` (targets: {})", names.join(", "))
    })?;
    let mut mutations = 0u64;
    let mut seed = 0u64;
    let mut paths = vec![];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mutations" => mutations = number(args.next(), "--mutations")?,
            "--seed" => seed = number(args.next(), "--seed")?,
            "--emit-mutant" => {
                let seed = number(args.next(), "--emit-mutant SEED")?;
                let index = number(args.next(), "--emit-mutant INDEX")?;
                let (Some(input), Some(out)) = (args.next(), args.next()) else {
                    bail!("{usage}");
                };
                let data = std::fs::read(&input).with_context(|| format!("reading {input}"))?;
                std::fs::write(&out, mutate::mutant(&data, seed, index))
                    .with_context(|| format!("writing {out}"))?;
                return Ok(());
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        bail!("{usage}");
    }
    let mut files = vec![];
    for p in &paths {
        collect(p, &mut files)?;
    }
    let mut inputs = 0u64;
    for file in &files {
        let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        eprintln!("input {}", file.display());
        target.run(&data);
        inputs += 1;
        for index in 0..mutations {
            eprintln!(
                "input {} --emit-mutant {seed} {index} (reproduce: fuzz-replay {name} \
                 --emit-mutant {seed} {index} {} OUT)",
                file.display(),
                file.display()
            );
            target.run(&mutate::mutant(&data, seed, index));
            inputs += 1;
        }
    }
    println!(
        "{name}: {inputs} inputs ({} files, {mutations} mutants each) ok",
        files.len()
    );
    Ok(())
}

fn number(arg: Option<String>, flag: &str) -> Result<u64> {
    let arg = arg.with_context(|| format!("{flag} needs a number"))?;
    arg.parse()
        .with_context(|| format!("{flag}: `{arg}` is not a number"))
}

/// `path` itself, or the files of a directory (not recursive), sorted.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", path.display()))?;
        files.retain(|f| f.is_file());
        files.sort();
        out.extend(files);
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}
