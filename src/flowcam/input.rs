//! Opening the instrument's files, which are untrusted: only regular files, and only inside
//! the session folder.
//!
//! A page or list that is a FIFO, a device or a folder would block the run in `open()` (a
//! FIFO waits for a writer forever, holding the session's lock) or fail obscurely later; a
//! symlink could make us read anything on the machine. So a file is opened only if,
//! after following links, it is a regular file whose real path lies inside the session's
//! real folder; the open itself does not block (`O_NONBLOCK`), and the check is made on the
//! opened file, so nothing can be swapped in between.

use anyhow::bail;
use std::fs::File;
use std::path::Path;

/// Opens `path` for reading if it is a regular file inside `folder` (a canonical path).
pub fn open_regular(path: &Path, folder: &Path) -> anyhow::Result<File> {
    let real = path
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !real.starts_with(folder) {
        bail!(
            "{} is a link to {}, outside the session folder {}: refused",
            path.display(),
            real.display(),
            folder.display()
        );
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = options
        .open(&real)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let kind = file
        .metadata()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .file_type();
    if !kind.is_file() {
        bail!(
            "{} is not a regular file (it is {}): refused",
            path.display(),
            describe(kind)
        );
    }
    Ok(file)
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a plain file"
    }
}
