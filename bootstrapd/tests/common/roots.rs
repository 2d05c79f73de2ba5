//! Temporary host roots: a directory standing in for `/`, removed when dropped.

use bootstrapd::fsutil::HostRoot;

/// A fresh empty host root. Keep the `TempDir`: dropping it removes the tree.
pub fn temp_root() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    (dir, root)
}
