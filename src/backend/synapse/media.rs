//! Avatars: the user's avatar from its record, whether a declared file is
//! the content already uploaded, and uploading it as the user.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Synapse;
use crate::backend::proxy::from_homeserver;
use crate::backend::ServerError;
use crate::http::{path_segment, Body, Download};
use crate::matrix_id::{split_mxc, UserId};
use crate::model::{Avatar, AvatarFile, SeenAvatar};

impl Synapse {
    /// The avatar in `user`'s record, and, for a declared file, whether
    /// its content is that file's.
    pub(super) async fn avatar(
        &self,
        user: &UserId,
        record: &Value,
        declared: &Avatar,
    ) -> Result<SeenAvatar, ServerError> {
        let uri = record
            .get("avatar_url")
            .and_then(Value::as_str)
            .filter(|uri| !uri.is_empty())
            .map(str::to_string);
        let is_declared_file = match (declared, &uri) {
            (Avatar::File(file), Some(uri)) => Some(self.media_is(user, uri, file).await?),
            (Avatar::File(_), None) => Some(false),
            (Avatar::Uri(_), _) => None,
        };
        Ok(SeenAvatar {
            uri,
            is_declared_file,
        })
    }

    /// Whether the media at `uri` is this server's and holds `file`'s bytes,
    /// downloaded with the module's token through the authenticated media
    /// API (synapse/rest/client/media.py), stopping at a length that differs.
    pub(super) async fn media_is(
        &self,
        user: &UserId,
        uri: &str,
        file: &AvatarFile,
    ) -> Result<bool, ServerError> {
        // Another server's media (or none at all) is replaced by an upload here.
        let Some((server, media_id)) = split_mxc(uri).filter(|(s, _)| *s == self.server_name)
        else {
            return Ok(false);
        };
        let what = format!("downloading the avatar {uri} of {user}");
        let path = format!(
            "/_matrix/client/v1/media/download/{}/{}",
            path_segment(server),
            path_segment(media_id)
        );
        let response = match self.http.download(&path, &self.token).await? {
            Download::Found(response) => response,
            // Deleted or quarantined media: the declared file is uploaded again.
            Download::Refused(reply)
                if reply.status == StatusCode::NOT_FOUND && reply.errcode() == "M_NOT_FOUND" =>
            {
                return Ok(false)
            }
            Download::Refused(reply) => return Err(ServerError::refused(what, &reply)),
        };
        if response
            .content_length()
            .is_some_and(|length| length != file.bytes.len() as u64)
        {
            return Ok(false);
        }
        let content = response
            .bytes()
            .await
            .map_err(|error| ServerError::Unexpected {
                what,
                detail: error.to_string(),
            })?;
        Ok(content[..] == file.bytes[..])
    }

    /// Uploads `file` as the module's account (so the media is that
    /// account's) and returns its mxc URI.
    pub(super) async fn upload(
        &self,
        user: &UserId,
        file: &AvatarFile,
    ) -> Result<String, ServerError> {
        const UPLOAD: &str = "/_matrix/media/v3/upload";
        let what = format!("uploading {} as the avatar of {user}", file.path);
        let name = std::path::Path::new(&file.path)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = Body::Bytes {
            content_type: file.content_type,
            bytes: &file.bytes,
        };
        let reply = self
            .http
            .send_query(
                Method::POST,
                UPLOAD,
                &[("filename", &name)],
                Some(&self.token),
                body,
            )
            .await?;
        let reply = from_homeserver(UPLOAD, reply)?;
        match reply.body.get("content_uri").and_then(Value::as_str) {
            Some(uri) if reply.status == StatusCode::OK => Ok(uri.to_string()),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }
}
