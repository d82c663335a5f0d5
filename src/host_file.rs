//! The files options name on the managed host (secret files, `ca_path`,
//! avatars, cached tokens, SQLite databases), opened so that no file can
//! hang or flood a run: never waiting on open (a FIFO without a writer
//! waits forever), refused unless a regular file, and read up to a bound
//! that fits what the file holds (`/dev/zero` or a huge file is not read
//! whole). The private files the module writes (cached access tokens,
//! `token_file`) are written whole or not at all ([`PendingFile`]).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The most a file may hold, and what it holds, for the message when it
/// holds more.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub bytes: u64,
    /// What the file holds, as in "larger than 16 KiB, more than {holds}".
    pub holds: &'static str,
}

/// A secret (shared secret, token, database URL, client secret): a few
/// hundred bytes at most in practice.
pub const SECRET: Bound = Bound {
    bytes: 16 * 1024,
    holds: "a secret ever needs",
};

/// A PEM CA bundle: the whole Mozilla store is about 220 KiB.
pub const CA_BUNDLE: Bound = Bound {
    bytes: 10 * 1024 * 1024,
    holds: "a CA bundle ever needs",
};

/// Why a file an option names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// Opening or reading failed (missing, no permission, a link where none is followed...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, device, socket or folder: reading one may never end.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// More bytes than the option's file ever holds.
    #[error("it is larger than {}, more than {}", size(.0.bytes), .0.holds)]
    TooLarge(Bound),
}

/// A file read whole, with its permission bits.
pub struct Contents {
    pub bytes: Vec<u8>,
    /// The permission bits (`0o644`).
    pub mode: u32,
}

impl Contents {
    /// Whether every user of the host may read it.
    pub fn readable_by_everyone(&self) -> bool {
        self.mode & 0o004 != 0
    }
}

/// Reads the regular file at `path`, at most `bound` bytes of it. With
/// `follow_links: false`, a symbolic link fails with `ELOOP`.
pub fn read(path: &Path, bound: Bound, follow_links: bool) -> Result<Contents, FileProblem> {
    let (file, metadata) = open_regular(path, follow_links)?;
    if metadata.len() > bound.bytes {
        return Err(FileProblem::TooLarge(bound));
    }
    let mut bytes = Vec::new();
    // One byte more than the bound tells a file that grew since from one that fits.
    file.take(bound.bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > bound.bytes {
        return Err(FileProblem::TooLarge(bound));
    }
    Ok(Contents {
        bytes,
        mode: metadata.permissions().mode() & 0o7777,
    })
}

/// Refuses anything at `path` but a regular file, without reading it (for
/// a file another library opens, such as SQLite); nothing there is fine.
#[cfg(feature = "databases")]
pub fn refuse_special(path: &Path) -> Result<(), FileProblem> {
    match open_regular(path, true) {
        Err(FileProblem::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Opens `path` without waiting (`O_NONBLOCK`: a FIFO opens at once) and
/// refuses it unless the file opened is a regular one. The type is read
/// from the open file, so nothing can be swapped in between.
fn open_regular(path: &Path, follow_links: bool) -> Result<(File, Metadata), FileProblem> {
    let mut flags = libc::O_NONBLOCK;
    if !follow_links {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    let special = if kind.is_file() {
        return Ok((file, metadata));
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a folder"
    } else {
        "a special file"
    };
    Err(FileProblem::NotRegular(special))
}

/// A private file (mode 0600) being written beside the file it replaces:
/// renamed over it when complete, so a link planted at that path is
/// replaced, never written through; removed when dropped before that.
pub struct PendingFile {
    file: File,
    temporary: PathBuf,
    path: PathBuf,
}

impl PendingFile {
    /// Creates the temporary file that will replace `path`, in its folder:
    /// so a folder that cannot take it is found before anything is made.
    pub fn beside(path: &Path) -> std::io::Result<PendingFile> {
        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        // A name no one can guess, for each run: runs sharing the folder
        // must not write into each other's file, nor anyone into ours.
        let temporary = path.with_extension(format!("{}-{suffix}.tmp", std::process::id()));
        Ok(PendingFile {
            file: create_private_file(&temporary)?,
            temporary,
            path: path.to_path_buf(),
        })
    }

    /// Writes `contents` and puts the file in place in one step.
    pub fn commit(mut self, contents: &[u8]) -> std::io::Result<()> {
        self.file.write_all(contents)?;
        self.file.sync_all()?;
        std::fs::rename(&self.temporary, &self.path)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // After a commit the name is gone already; nothing else is there.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Creates `path` for writing, mode 0600; fails if anything, a link
/// included, is already there.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// A bound in the unit people write it in (`16 KiB`, `10 MiB`).
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 && b % (1024 * 1024) == 0 => format!("{} MiB", b / (1024 * 1024)),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// A file of its own in the temporary folder, removed when dropped: the
/// unit tests' file on the managed host.
#[cfg(test)]
pub struct TempFile(pub std::path::PathBuf);

#[cfg(test)]
impl TempFile {
    /// `name` (unique among the tests) holding `bytes`.
    pub fn with(name: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("matrix-user-test-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

#[cfg(test)]
impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "matrix-user-host-file-{name}-{}",
            std::process::id()
        ))
    }

    #[test]
    fn a_fifo_a_device_and_a_folder_are_refused_without_waiting() {
        let fifo = scratch("fifo");
        let _ = std::fs::remove_file(&fifo);
        let name = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid C string and a mode; no other precondition.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let problem = |path: &Path| read(path, SECRET, true).err().unwrap().to_string();
        assert_eq!(
            problem(&fifo),
            "it is a FIFO (named pipe), not a regular file"
        );
        #[cfg(feature = "databases")]
        {
            assert!(matches!(
                refuse_special(&fifo),
                Err(FileProblem::NotRegular(_))
            ));
            assert!(refuse_special(&scratch("missing")).is_ok());
        }
        std::fs::remove_file(&fifo).unwrap();
        assert_eq!(
            problem(Path::new("/dev/zero")),
            "it is a character device, not a regular file"
        );
        assert_eq!(
            problem(&std::env::temp_dir()),
            "it is a folder, not a regular file"
        );
    }

    #[test]
    fn a_file_is_read_up_to_its_bound_and_no_further() {
        let path = scratch("bounded");
        let bound = Bound {
            bytes: 8,
            holds: "a test value needs",
        };
        std::fs::write(&path, b"12345678").unwrap();
        assert_eq!(read(&path, bound, true).unwrap().bytes, b"12345678");
        std::fs::write(&path, b"123456789").unwrap();
        assert_eq!(
            read(&path, bound, true).err().unwrap().to_string(),
            "it is larger than 8 bytes, more than a test value needs"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(size(SECRET.bytes), "16 KiB");
        assert_eq!(size(CA_BUNDLE.bytes), "10 MiB");
    }
}
