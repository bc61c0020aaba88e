//! Opening a file inside an export: only regular files, never through a
//! symbolic link at the last component, never blocking on a FIFO or device.
//!
//! The file is opened with `O_NOFOLLOW | O_NONBLOCK` (unix), then the open
//! descriptor is `fstat`ed: anything but a regular file is refused before a
//! byte is read. Readers read only through the returned descriptor.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// Open `path` for reading if it is a regular file (not a symbolic link, FIFO,
/// socket or device); returns the file and its `fstat`.
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = match o.open(path) {
        Ok(f) => f,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link, which is not followed"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, not_regular(&meta)));
    }
    Ok((file, meta))
}

/// What kind of non-regular file `meta` is, in words.
pub fn not_regular(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "is a FIFO (named pipe), not a regular file";
        }
        if t.is_socket() {
            return "is a socket, not a regular file";
        }
        if t.is_block_device() || t.is_char_device() {
            return "is a device, not a regular file";
        }
    }
    if meta.is_dir() { "is a folder, not a regular file" } else { "is not a regular file" }
}

/// Is this entry something other than a regular file, a folder or a symbolic link?
pub fn is_special(meta: &Metadata) -> bool {
    let t = meta.file_type();
    !(t.is_file() || t.is_dir() || t.is_symlink())
}

/// Is this error one that passes by itself (no descriptors or memory left,
/// an interrupted or timed-out read, an I/O error of a share; on Windows a
/// sharing or lock violation: the renderer still holds the file open for
/// writing without sharing it, so it is still being written)? A file that
/// does not open for such a reason is not a verdict on the file: the
/// export is looked at again later instead of being rejected.
pub fn is_transient(e: &io::Error) -> bool {
    #[cfg(windows)]
    if let Some(code) = e.raw_os_error() {
        use windows_sys::Win32::Foundation::{
            ERROR_LOCK_VIOLATION, ERROR_NETNAME_DELETED, ERROR_NOT_ENOUGH_MEMORY, ERROR_SEM_TIMEOUT,
            ERROR_SHARING_VIOLATION, ERROR_TOO_MANY_OPEN_FILES, ERROR_UNEXP_NET_ERR,
        };
        let transient = [
            ERROR_SHARING_VIOLATION,
            ERROR_LOCK_VIOLATION,
            ERROR_TOO_MANY_OPEN_FILES,
            ERROR_NOT_ENOUGH_MEMORY,
            ERROR_NETNAME_DELETED,
            ERROR_UNEXP_NET_ERR,
            ERROR_SEM_TIMEOUT,
        ];
        if transient.iter().any(|&c| i64::from(c) == i64::from(code)) {
            return true;
        }
    }
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOBUFS
                | libc::EAGAIN
                | libc::EINTR
                | libc::EIO
                | libc::ETIMEDOUT
                | libc::ESTALE
        );
    }
    matches!(
        e.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::StaleNetworkFileHandle
    )
}
