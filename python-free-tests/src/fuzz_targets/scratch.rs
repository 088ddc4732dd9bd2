//! The scratch file each input is written to before a path-based reader opens it.
//!
//! One private directory per thread (`$TMPDIR`; campaigns point it at `/dev/shm`), reused for
//! every input, removed when the thread ends.

use std::cell::RefCell;
use std::path::PathBuf;

thread_local! {
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Writes `data` to the thread's scratch file called `name` and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        let dir = dir.get_or_insert_with(|| {
            tempfile::Builder::new()
                .prefix("dalle-fuzz-")
                .tempdir()
                .expect("cannot create the fuzz scratch directory")
        });
        let path = dir.path().join(name);
        std::fs::write(&path, data).expect("cannot write the fuzz scratch file");
        path
    })
}
