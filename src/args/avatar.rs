//! A user's `avatar`: an `mxc://` URI, checked by shape, or an image file on
//! the managed host, read and checked here, so that a bad one fails before
//! anything is sent.

use std::path::Path;
use std::sync::Arc;

use super::fields::{echo, Fields};
use super::ArgsError;
use crate::host_file::{self, FileProblem};
use crate::matrix_id::split_mxc;
use crate::model::{ArgsErrorKind, Avatar, AvatarFile};
use crate::secret::excerpt;

/// Synapse refuses longer avatar URLs (`MAX_AVATAR_URL_LEN`, synapse/handlers/profile.py).
const MAX_URI_CHARS: usize = 1000;
/// Linux's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;
/// Synapse's default `max_upload_size` ("50M", synapse/config/repository.py);
/// a server configured lower answers the upload with 413.
const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;

const ACCEPTED: &str = "an mxc://server/media_id URI, or the absolute path of a PNG, JPEG, \
                        GIF or WebP image on the managed host";

pub(super) fn read_avatar(fields: &Fields) -> Result<Option<Avatar>, ArgsError> {
    let Some(value) = fields.string("avatar")? else {
        return Ok(None);
    };
    let field = fields.name("avatar");
    let well_formed = match value.strip_prefix("mxc://") {
        Some(_) => split_mxc(&value).is_some() && value.chars().count() <= MAX_URI_CHARS,
        None => value.starts_with('/') && value.len() <= MAX_PATH_BYTES,
    };
    if !well_formed {
        return Err(ArgsError::at(
            field,
            ArgsErrorKind::NotAccepted {
                value: echo(&value),
                accepted: ACCEPTED.into(),
            },
        ));
    }
    match value.starts_with("mxc://") {
        true => Ok(Some(Avatar::Uri(value))),
        false => read_image(field, value).map(|file| Some(Avatar::File(file))),
    }
}

/// Reads the image at `path`, refusing what a homeserver would refuse or could not show.
fn read_image(field: String, path: String) -> Result<AvatarFile, ArgsError> {
    let refuse = |problem: String| {
        ArgsError::at(
            field.clone(),
            ArgsErrorKind::AvatarFile {
                path: excerpt(&path, MAX_PATH_BYTES),
                problem,
            },
        )
    };
    let bound = host_file::Bound {
        bytes: MAX_FILE_BYTES,
        holds: "a homeserver accepts by default",
    };
    let bytes = match host_file::read(Path::new(&path), bound, true) {
        Ok(contents) => contents.bytes,
        Err(problem @ FileProblem::TooLarge(_)) => {
            return Err(refuse(format!("{problem}; give a smaller image")))
        }
        Err(problem) => {
            return Err(refuse(format!(
                "cannot be read ({problem}); give the path of an image file on the managed \
                 host (the role copies one from the controller first)"
            )))
        }
    };
    if bytes.is_empty() {
        return Err(refuse("is empty; give an image".into()));
    }
    let content_type = image_type(&bytes).ok_or_else(|| {
        refuse(
            "is not a PNG, JPEG, GIF or WebP image (judged by its first bytes, not its name); \
             convert it to one of those"
                .into(),
        )
    })?;
    Ok(AvatarFile {
        path,
        content_type,
        bytes: Arc::from(bytes),
    })
}

/// The media type of an image in a format every Matrix client shows, by its signature.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    let webp = bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP";
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if webp {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_file::TempFile;
    use serde_json::{json, Value};

    fn read(avatar: Value) -> Result<Option<Avatar>, String> {
        let users = json!({"users": [{"username": "a"}, {"username": "b", "avatar": avatar}]});
        let fields = Fields::top(users.as_object().unwrap());
        let entry = fields.value("users").unwrap()[1].as_object().unwrap();
        read_avatar(&Fields::nested(entry, "users[1]".into())).map_err(|e| e.to_string())
    }

    #[test]
    fn an_mxc_uri_is_taken_as_it_is_and_a_malformed_one_is_refused_by_name() {
        assert_eq!(
            read(json!("mxc://example.com/AbC_9-x")),
            Ok(Some(Avatar::Uri("mxc://example.com/AbC_9-x".into())))
        );
        assert_eq!(read(Value::Null), Ok(None));
        let long = format!("mxc://example.com/{}", "a".repeat(MAX_URI_CHARS));
        for bad in [
            "https://example.com/a.png",
            "mxc://example.com",
            "avatar.png",
            "",
            &long,
        ] {
            let message = read(json!(bad)).unwrap_err();
            assert!(
                message.starts_with("users[1].avatar: ") && message.contains(ACCEPTED),
                "{message}"
            );
        }
        assert_eq!(
            read(json!(["mxc://example.com/a"])).unwrap_err(),
            "users[1].avatar: expected a string"
        );
    }

    #[test]
    fn an_image_file_is_read_with_its_type_from_its_first_bytes() {
        let cases: [(&[u8], &str); 4] = [
            (b"\x89PNG\r\n\x1a\nrest", "image/png"),
            (b"\xFF\xD8\xFF\xE0rest", "image/jpeg"),
            (b"GIF89arest", "image/gif"),
            (b"RIFF\x04\x00\x00\x00WEBPVP8 ", "image/webp"),
        ];
        for (index, (bytes, content_type)) in cases.into_iter().enumerate() {
            // The name says nothing: the content decides.
            let file = TempFile::with(&format!("type-{index}.bin"), bytes);
            let Ok(Some(Avatar::File(read))) = read(json!(file.path())) else {
                panic!("{content_type} was not read");
            };
            assert_eq!(read.content_type, content_type);
            assert_eq!(&read.bytes[..], bytes);
            assert_eq!(read.path, file.path());
        }
    }

    #[test]
    fn a_missing_empty_oversized_or_foreign_file_is_refused_naming_field_and_path() {
        let refused = |path: &str, problem: &str| {
            let message = read(json!(path)).unwrap_err();
            assert!(
                message.starts_with(&format!("users[1].avatar: {path}: {problem}")),
                "{message}"
            );
        };
        let missing = std::env::temp_dir().join("matrix-user-avatar-missing.png");
        refused(&missing.display().to_string(), "cannot be read (");
        refused(
            &std::env::temp_dir().display().to_string(),
            "cannot be read (it is a folder, not a regular file)",
        );
        let empty = TempFile::with("empty.png", b"");
        refused(&empty.path(), "is empty");
        let svg = TempFile::with("logo.png", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
        refused(&svg.path(), "is not a PNG, JPEG, GIF or WebP image");
        let huge = TempFile::with("huge.png", b"\x89PNG\r\n\x1a\n");
        std::fs::File::options()
            .write(true)
            .open(&huge.0)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        refused(
            &huge.path(),
            "it is larger than 50 MiB, more than a homeserver accepts by default",
        );
    }

    #[test]
    fn a_file_avatar_does_not_print_its_content() {
        let file = AvatarFile {
            path: "/a.png".into(),
            content_type: "image/png",
            bytes: Arc::from(&b"secret-ish pixels"[..]),
        };
        assert_eq!(
            format!("{file:?}"),
            "AvatarFile(/a.png, image/png, 17 bytes)"
        );
    }
}
