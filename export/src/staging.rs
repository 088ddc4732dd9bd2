//! Installing a finished bundle: the destination checks, the swap, and recovery from exports
//! that were killed.
//!
//! A bundle is written into `.<name>.partial-<pid>` beside its destination and moved into place
//! at the end ([`install`]). Replacing an existing bundle (`--force`) exchanges the two
//! directories atomically with `renameat2(RENAME_EXCHANGE)` where the file system supports it;
//! elsewhere it moves the old bundle to `.<name>.old` first, a journal that [`recover`] reads.
//! Each new export first [`recover`]s: staging folders of processes that no longer run are
//! removed, and a `.<name>.old` left by a crash between the two renames is put back (when the
//! destination is missing) or removed (when the destination is whole), so a crash never blocks
//! the next `--force`.
//!
//! The destination is only ever replaced when it is a bundle (a directory holding
//! `manifest.json`) or an empty directory; a file, a symbolic link or a directory of other
//! things is refused before anything is written.

use crate::error::{ExportError, Result};
use dalle_bundle::manifest::MANIFEST_FILE;
use std::path::{Path, PathBuf};

/// `.<name>.partial-`: the staging folders' prefix for destination `name`.
fn staging_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

/// The staging folder of this process for destination `name` in `parent`.
pub fn staging_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join(format!("{}{}", staging_prefix(name), std::process::id()))
}

/// The journal of a two-rename swap: where the old bundle waits while the new one moves in.
pub fn old_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join(format!(".{name}.old"))
}

fn refuse(path: &Path, why: &str) -> ExportError {
    ExportError::Destination {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Fails unless `destination` is absent, or `overwrite` is set and it is a bundle or an empty
/// directory.
pub fn check_destination(destination: &Path, overwrite: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(destination) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExportError::io(destination, e)),
    };
    if !overwrite {
        return Err(ExportError::DestinationExists {
            path: destination.to_path_buf(),
        });
    }
    if meta.file_type().is_symlink() {
        return Err(refuse(
            destination,
            "is a symbolic link; --force replaces only a bundle directory, give the real path",
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(
            destination,
            "is not a directory; --force replaces only a bundle directory",
        ));
    }
    let is_bundle = destination.join(MANIFEST_FILE).is_file();
    let empty = std::fs::read_dir(destination)
        .map_err(|e| ExportError::io(destination, e))?
        .next()
        .is_none();
    if !is_bundle && !empty {
        return Err(refuse(
            destination,
            "is a non-empty directory without manifest.json, not a bundle; --force replaces \
             only a bundle directory",
        ));
    }
    Ok(())
}

/// Whether process `pid` is running. `None` where that cannot be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes `path` whatever it is (directory tree, file, link).
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`recover`] did, for messages and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Staging folders of dead processes that were removed.
    pub removed_staging: Vec<PathBuf>,
    /// `.<name>.old` was moved back to the (missing) destination.
    pub restored_old: bool,
    /// `.<name>.old` was removed (the destination was whole).
    pub removed_old: bool,
}

/// Cleans up after killed exports to `parent/name` (see the module docs). Staging folders of
/// live processes (another export running now) are left alone.
pub fn recover(parent: &Path, name: &str) -> Result<Recovery> {
    let mut done = Recovery::default();
    let prefix = staging_prefix(name);
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(ExportError::io(parent, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ExportError::io(parent, e))?;
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && process_alive(pid) == Some(false) {
            let path = entry.path();
            remove_any(&path).map_err(|e| ExportError::io(&path, e))?;
            done.removed_staging.push(path);
        }
    }
    let old = old_dir(parent, name);
    if std::fs::symlink_metadata(&old).is_ok() {
        let destination = parent.join(name);
        if std::fs::symlink_metadata(&destination).is_ok() {
            remove_any(&old).map_err(|e| ExportError::io(&old, e))?;
            done.removed_old = true;
        } else {
            std::fs::rename(&old, &destination).map_err(|e| ExportError::io(&old, e))?;
            done.restored_old = true;
        }
    }
    Ok(done)
}

/// Moves the finished `staging` directory to `destination`, replacing an existing bundle there
/// (checked by [`check_destination`] first) when `overwrite` is set.
pub fn install(staging: &Path, destination: &Path, overwrite: bool) -> Result<()> {
    check_destination(destination, overwrite)?;
    if std::fs::symlink_metadata(destination).is_err() {
        return std::fs::rename(staging, destination).map_err(|e| ExportError::io(destination, e));
    }
    if exchange(staging, destination)? {
        // `staging` now holds the old bundle. A failure to remove it leaves a staging folder
        // of this process, which the next export removes.
        if let Err(e) = std::fs::remove_dir_all(staging) {
            tracing::warn!(
                "could not remove the replaced bundle {}: {e}",
                staging.display()
            );
        }
        return Ok(());
    }
    swap_by_renames(staging, destination)
}

/// The swap without an atomic exchange: two renames, journaled by `.<name>.old`.
fn swap_by_renames(staging: &Path, destination: &Path) -> Result<()> {
    let (parent, name) = split(destination)?;
    let old = old_dir(&parent, &name);
    remove_any(&old).map_err(|e| ExportError::io(&old, e))?;
    std::fs::rename(destination, &old).map_err(|e| ExportError::io(destination, e))?;
    if let Err(e) = std::fs::rename(staging, destination) {
        // Put the old bundle back; `recover` does the same after a crash here.
        let _ = std::fs::rename(&old, destination);
        return Err(ExportError::io(destination, e));
    }
    remove_any(&old).map_err(|e| ExportError::io(&old, e))
}

/// The parent directory (`.` for a bare name) and the file name of `destination`.
pub fn split(destination: &Path) -> Result<(PathBuf, String)> {
    let name = destination
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "..")
        .ok_or_else(|| refuse(destination, "not a directory name"))?;
    let parent = match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// Swaps two paths atomically. `Ok(false)` where the system or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(false),
        Err(e) => Err(ExportError::io(b, e.into())),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(dir: &Path, marker: &str) {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), b"{}").unwrap();
        std::fs::write(dir.join(marker), b"x").unwrap();
    }

    /// The fallback where `RENAME_EXCHANGE` is unsupported (this file system has it, so
    /// `install` never takes this path in the integration tests).
    #[test]
    fn the_two_rename_swap_replaces_and_leaves_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b");
        bundle(&dest, "old");
        let staging = staging_dir(dir.path(), "b");
        bundle(&staging, "new");
        swap_by_renames(&staging, &dest).unwrap();
        assert!(dest.join("new").is_file() && !dest.join("old").exists());
        assert!(!staging.exists() && !old_dir(dir.path(), "b").exists());
    }

    #[test]
    fn a_stale_journal_next_to_a_whole_bundle_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        bundle(&dir.path().join("b"), "current");
        bundle(&old_dir(dir.path(), "b"), "previous");
        let r = recover(dir.path(), "b").unwrap();
        assert!(r.removed_old && !r.restored_old);
        assert!(dir.path().join("b/current").is_file());
        assert!(!old_dir(dir.path(), "b").exists());
    }
}
