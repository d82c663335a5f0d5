//! Where the service account's token is kept between runs, so that a run
//! need not log in: a private file in a private folder, never reached
//! through a link, replaced in one step.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::shared_secret::hex;
use crate::host_file::{self, FileProblem, PendingFile};
use crate::matrix_id::Username;
use crate::secret::Secret;

/// Why a token could not be kept or read safely. The context is stated
/// once: `path`, the token's file, or for a problem of its folder the
/// folder. Shown, it speaks of the service account's token in
/// `token_cache_dir`; a bot's `access_token_file` names its own [`Whose`].
#[derive(Debug, thiserror::Error)]
#[error("token_cache_dir: {}", .kind.describe(.path, &SERVICE_ACCOUNT))]
pub struct TokenCacheError {
    pub path: String,
    pub kind: TokenCacheProblem,
}

/// What is wrong with a token's file or folder.
#[derive(Debug)]
pub enum TokenCacheProblem {
    /// The file cannot be written (nor its folder made).
    Unwritable { detail: String },
    /// The folder belongs to another user, who could swap the token.
    ForeignFolder { owner: u32 },
    /// Others can write the folder, so they could swap the token.
    SharedFolder { mode: String },
    /// The file is a symbolic link, which is never followed.
    Link,
    /// The file is not a regular file, or too large for a token.
    Unusable { problem: String },
}

/// Whose token a [`TokenCache`] keeps, in the words its messages use.
pub struct Whose {
    /// The token, as a message names it.
    pub token: &'static str,
    /// How to choose another folder (followed by "a ... folder").
    pub choose: &'static str,
}

/// The service account's token, kept in `token_cache_dir`.
const SERVICE_ACCOUNT: Whose = Whose {
    token: "the service account's token",
    choose: "set token_cache_dir to",
};

impl TokenCacheProblem {
    /// What is wrong with `path`, which holds `whose` token, then what to do.
    pub fn describe(&self, path: &str, whose: &Whose) -> String {
        let Whose { token, choose } = whose;
        let (wrong, to_do) = match self {
            TokenCacheProblem::Unwritable { detail } => (
                format!("cannot keep {token} in {path}: {detail}"),
                format!("make its folder writable by the user running the module, or {choose} a writable folder"),
            ),
            TokenCacheProblem::ForeignFolder { owner } => (
                format!("the folder {path} belongs to another user (uid {owner}), who could read or replace {token}"),
                format!("{choose} a folder of the user running the module"),
            ),
            TokenCacheProblem::SharedFolder { mode } => (
                format!("the folder {path} can be written by other users (mode {mode}), who could replace {token}"),
                format!("make it writable only by its owner (chmod go-w), or {choose} a private folder"),
            ),
            TokenCacheProblem::Link => (
                format!("{path} is a symbolic link, which matrix_user does not follow (it could lead {token} elsewhere)"),
                "remove the link".to_string(),
            ),
            TokenCacheProblem::Unusable { problem } => (
                format!("cannot read {token} in {path}: {problem}"),
                "remove it (matrix_user writes a new one)".to_string(),
            ),
        };
        format!("{wrong}; {to_do}")
    }
}

/// Where the service account's token is kept between runs: one file per
/// homeserver implementation, URL and account, readable only by the user
/// running the module, in a folder no one else can write. Links are never
/// followed: another user able to plant one could read or replace the token.
pub(super) struct TokenCache {
    folder: PathBuf,
    /// The token file, inside `folder`.
    path: PathBuf,
}

impl TokenCache {
    /// `kind` names the homeserver implementation (`synapse`, `dendrite`).
    pub(super) fn new(kind: &str, dir: &Path, url: &str, account: &Username) -> TokenCache {
        let key = hex(&Sha1::digest(
            format!("{url}\0{}", account.localpart()).as_bytes(),
        ));
        TokenCache {
            folder: dir.to_path_buf(),
            path: dir.join(format!("{kind}-{}.token", &key[..16])),
        }
    }

    /// A secret file at `path` (a bot's `access_token_file`), kept with the
    /// same care as the service account's token.
    pub(super) fn at(path: &Path) -> TokenCache {
        TokenCache {
            folder: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path: path.to_path_buf(),
        }
    }

    /// The problem `kind`, at `path` (the file, or its folder).
    fn refused(path: &Path, kind: TokenCacheProblem) -> TokenCacheError {
        TokenCacheError {
            path: path.display().to_string(),
            kind,
        }
    }

    fn failed(&self, error: std::io::Error) -> TokenCacheError {
        let detail = error.to_string();
        TokenCache::refused(&self.path, TokenCacheProblem::Unwritable { detail })
    }

    /// Creates the folder (mode 0700) if missing, and refuses one that
    /// another user owns or that others can write: its owner, or anyone
    /// who can write it, could swap the token for theirs. A folder is
    /// never changed, since it may be shared with other files.
    fn ensure_private_folder(&self) -> Result<(), TokenCacheError> {
        use std::os::unix::fs::DirBuilderExt;
        let folder = &self.folder;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|e| self.failed(e))?;
        let metadata = std::fs::metadata(folder).map_err(|e| self.failed(e))?;
        self.refuse_shared_folder(&metadata)
    }

    /// Refuses, changing nothing, what [`TokenCache::load`] and
    /// [`TokenCache::prepare_store`] would refuse later: a folder another
    /// user owns or others can write, one this user cannot write (or, when
    /// it is not there yet, cannot make), a cache file that is a link, not
    /// a regular file, or too large.
    pub(super) fn refuse_unsafe(&self) -> Result<(), TokenCacheError> {
        match std::fs::metadata(&self.folder) {
            Ok(metadata) => self.refuse_shared_folder(&metadata)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Made with its parents: the nearest folder that exists is written.
                let existing = self.folder.ancestors().skip(1).find(|p| p.exists());
                return existing.map_or(Ok(()), |folder| self.refuse_unwritable(folder));
            }
            Err(e) => return Err(self.failed(e)),
        }
        self.refuse_unwritable(&self.folder)?;
        self.load().map(|_| ())
    }

    /// Refuses `folder` when this user cannot create files in it
    /// (`access(2)`, which also knows an immutable folder refuses root).
    fn refuse_unwritable(&self, folder: &Path) -> Result<(), TokenCacheError> {
        use std::os::unix::ffi::OsStrExt;
        let Ok(name) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
            return Ok(());
        };
        // SAFETY: a valid C string and flags; access(2) has no other precondition.
        match unsafe { libc::access(name.as_ptr(), libc::W_OK | libc::X_OK) } {
            0 => Ok(()),
            _ => Err(self.failed(std::io::Error::last_os_error())),
        }
    }

    fn refuse_shared_folder(&self, metadata: &std::fs::Metadata) -> Result<(), TokenCacheError> {
        use std::os::unix::fs::MetadataExt;
        let folder = &self.folder;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        if metadata.uid() != user {
            let owner = metadata.uid();
            return Err(TokenCache::refused(
                folder,
                TokenCacheProblem::ForeignFolder { owner },
            ));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            let mode = format!("{mode:04o}");
            return Err(TokenCache::refused(
                folder,
                TokenCacheProblem::SharedFolder { mode },
            ));
        }
        Ok(())
    }

    /// The cached token, `None` when there is none yet.
    pub(super) fn load(&self) -> Result<Option<Secret>, TokenCacheError> {
        self.ensure_private_folder()?;
        let contents = match host_file::read(&self.path, host_file::SECRET, false) {
            Ok(contents) => contents,
            Err(FileProblem::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(FileProblem::Io(e)) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(TokenCache::refused(&self.path, TokenCacheProblem::Link))
            }
            Err(FileProblem::Io(e)) => return Err(self.failed(e)),
            Err(problem) => {
                let problem = problem.to_string();
                return Err(TokenCache::refused(
                    &self.path,
                    TokenCacheProblem::Unusable { problem },
                ));
            }
        };
        let token = String::from_utf8_lossy(&contents.bytes);
        Ok(Some(Secret::new(token.trim())).filter(|t| !t.expose().is_empty()))
    }

    /// Opens a fresh temporary file beside the cache file, so that a folder
    /// the token cannot be written to is found before a token exists (that
    /// is, before the service account is registered or logged in).
    pub(super) fn prepare_store(&self) -> Result<PendingToken, TokenCacheError> {
        self.ensure_private_folder()?;
        let file = PendingFile::beside(&self.path).map_err(|e| self.failed(e))?;
        Ok(PendingToken {
            file,
            path: self.path.clone(),
        })
    }

    /// Forgets the cached token; a cache already gone is fine.
    pub(super) fn discard(&self) -> Result<(), TokenCacheError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.failed(e)),
            _ => Ok(()),
        }
    }

    #[cfg(test)]
    fn store(&self, token: &Secret) -> Result<(), TokenCacheError> {
        self.prepare_store()?.commit(token)
    }
}

/// A token file being written: renamed over the cache file when complete,
/// removed when dropped before that.
pub(super) struct PendingToken {
    file: PendingFile,
    path: PathBuf,
}

impl PendingToken {
    /// Writes `token` and puts the file in place in one step (a rename
    /// replaces a link at the cache path; it never writes through it).
    pub(super) fn commit(self, token: &Secret) -> Result<(), TokenCacheError> {
        let path = self.path;
        self.file.commit(token.expose().as_bytes()).map_err(|e| {
            let detail = e.to_string();
            TokenCache::refused(&path, TokenCacheProblem::Unwritable { detail })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_file::create_private_file;

    /// A fresh folder for one test, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("matrix-user-unit-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cache_in(dir: &Path) -> TokenCache {
        TokenCache::new("synapse", dir, "http://x", &Username::parse("svc").unwrap())
    }

    /// A cache in a private folder, as a run makes it, beside a file
    /// `victim` holding `content` for a planted link to point at; all in a
    /// fresh scratch folder `name`.
    fn cache_and_victim(name: &str, content: &str) -> (Scratch, PathBuf, TokenCache) {
        let scratch = Scratch::new(name);
        let victim = scratch.0.join("victim");
        std::fs::write(&victim, content).unwrap();
        let dir = scratch.0.join("cache");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        let cache = cache_in(&dir);
        (scratch, victim, cache)
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_token_is_kept_in_a_private_file_of_a_private_folder() {
        let scratch = Scratch::new("private");
        let dir = scratch.0.join("new").join("cache");
        let cache = cache_in(&dir);
        cache.store(&Secret::new("syt_token")).unwrap();
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_token");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&cache.path), 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn a_link_planted_at_the_cache_path_is_replaced_and_never_read() {
        let (_scratch, victim, cache) = cache_and_victim("link-at-path", "syt_planted");
        std::os::unix::fs::symlink(&victim, &cache.path).unwrap();
        let refused = cache.load().unwrap_err().to_string();
        assert!(refused.contains("is a symbolic link"), "{refused}");

        cache.store(&Secret::new("syt_ours")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "syt_planted");
        assert!(!std::fs::symlink_metadata(&cache.path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_ours");
    }

    #[test]
    fn a_link_planted_at_a_temporary_name_is_not_followed() {
        let (_scratch, victim, cache) = cache_and_victim("link-at-temp", "untouched");
        // The name a run used to write through, guessable from its pid.
        let guessable = cache
            .path
            .with_extension(format!("{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guessable).unwrap();
        cache.store(&Secret::new("syt_ours")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_ours");
        // Whatever the name, an existing entry is never opened.
        let error = create_private_file(&guessable).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn a_folder_others_can_write_is_refused_and_left_as_it_is() {
        let scratch = Scratch::new("shared");
        for shared_mode in [0o777, 0o770, 0o1777] {
            set_mode(&scratch.0, shared_mode);
            let cache = cache_in(&scratch.0);
            let refused = cache
                .store(&Secret::new("syt_token"))
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains("can be written by other users"),
                "{refused}"
            );
            assert!(
                cache.load().is_err(),
                "{shared_mode:o}: read from a shared folder"
            );
            assert_eq!(mode(&scratch.0), shared_mode);
            assert!(!cache.path.exists());
        }
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        let scratch = Scratch::new("foreign");
        // Running as root, a folder handed to `nobody`; otherwise `/`, root's.
        let foreign = if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&scratch.0, Some(65534), Some(65534)).unwrap();
            scratch.0.clone()
        } else {
            PathBuf::from("/")
        };
        let cache = cache_in(&foreign);
        let refused = cache
            .store(&Secret::new("syt_token"))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("belongs to another user"), "{refused}");
        assert!(!cache.path.exists());
    }

    #[test]
    fn an_unwritable_folder_is_found_before_a_token_exists() {
        let scratch = Scratch::new("unwritable");
        let in_the_way = scratch.0.join("file");
        std::fs::write(&in_the_way, "").unwrap();
        let refused = cache_in(&in_the_way.join("cache"))
            .prepare_store()
            .err()
            .expect("a folder inside a file cannot be made")
            .to_string();
        assert!(
            refused.starts_with("token_cache_dir: cannot keep the service account's token in"),
            "{refused}"
        );
    }

    #[test]
    fn each_homeserver_kind_has_its_own_cache_file() {
        let account = Username::parse("svc").unwrap();
        let synapse = TokenCache::new("synapse", Path::new("/c"), "http://x", &account);
        let dendrite = TokenCache::new("dendrite", Path::new("/c"), "http://x", &account);
        assert_ne!(synapse.path, dendrite.path);
        assert!(synapse.path.to_str().unwrap().starts_with("/c/synapse-"));
    }
}
