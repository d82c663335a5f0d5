//! `token_file`: where a token the server generated is kept, mode 0600,
//! written whole or not at all (a new file renamed into place, so a link
//! planted at the path is replaced, never written through).

use std::path::Path;

use crate::host_file::PendingFile;
use crate::secret::Secret;

/// Fails, saying why, when `path` could not take a token: checked before
/// the server is asked to generate one.
pub fn check_writable(path: &Path) -> Result<(), String> {
    create_beside(path).map(drop)
}

/// Writes `token` to `path`, mode 0600.
pub fn write(path: &Path, token: &Secret) -> Result<(), String> {
    let contents = [token.expose().as_bytes(), b"\n"].concat();
    create_beside(path)?
        .commit(&contents)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn create_beside(path: &Path) -> Result<PendingFile, String> {
    PendingFile::beside(path).map_err(|error| {
        let folder = match path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        format!("cannot write a file in {}: {error}", folder.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_written_private_and_a_missing_folder_is_refused() {
        let folder =
            std::env::temp_dir().join(format!("matrix-user-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("invitation");
        check_writable(&path).unwrap();
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
        write(&path, &Secret::new("generated-1234")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "generated-1234\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let missing = folder.join("no-such-folder/invitation");
        assert!(check_writable(&missing)
            .unwrap_err()
            .starts_with("cannot write a file in "));
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
