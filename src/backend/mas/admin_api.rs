//! Requests to MAS's admin API (`/api/admin/v1`): the token sent with
//! each, renewed once when MAS refuses it, and reading the answers.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{Mas, MasError};
use crate::backend::ServerError;
use crate::http::{path_segment, Body, Reply};
use crate::secret::Secret;

pub(super) const ADMIN_API: &str = "/api/admin/v1";

pub(super) fn user_path(id: &str, action: &str) -> String {
    format!("/users/{}{action}", path_segment(id))
}

pub(super) fn expect_ok(reply: Reply, what: &str) -> Result<(), ServerError> {
    match reply.status {
        StatusCode::OK => Ok(()),
        _ => Err(ServerError::refused(what, &reply)),
    }
}

pub(super) fn unexpected(what: &str, detail: &str) -> ServerError {
    ServerError::Unexpected {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// The ID of the resource in a `SingleResponse`.
pub(super) fn resource_id(body: &Value, what: &str) -> Result<String, ServerError> {
    body.pointer("/data/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| unexpected(what, "no data.id"))
}

impl Mas {
    /// One admin API request (see [`Mas::admin_request`]).
    pub(super) async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ServerError> {
        self.admin_request(method, path, &[], body).await
    }

    /// A read of one page of a list, its filter and page in `query`.
    pub(super) async fn admin_list(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Reply, ServerError> {
        self.admin_request(Method::GET, path, query, None).await
    }

    /// The items of the first page of a list that `query` filters; `what`
    /// names the look-up in errors.
    pub(super) async fn listed(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<Value>, ServerError> {
        let reply = self.admin_list(path, query).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        match reply.body.get("data") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(unexpected(what, "no data array")),
        }
    }

    /// One admin API request; when MAS refuses the token and a client is
    /// known, fetches a new token and sends the request once more.
    pub(super) async fn admin_request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, ServerError> {
        let path = format!("{ADMIN_API}{path}");
        let (token, generation) = self.tokens.current();
        let reply = self
            .send(method.clone(), &path, query, &token, body)
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let Some(token) = self.tokens.renew(&self.http, generation).await? else {
            return Err(ServerError::Mas(MasError::TokenRefused {
                detail: reply.explanation(),
            }));
        };
        let reply = self.send(method, &path, query, &token, body).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(ServerError::refused(
                "MAS refused the admin token it had just issued",
                &reply,
            ));
        }
        Ok(reply)
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: &Secret,
        body: Option<&Value>,
    ) -> Result<Reply, ServerError> {
        let body = match body {
            Some(value) => Body::Json(value),
            None => Body::None,
        };
        Ok(self
            .http
            .send_query(method, path, query, Some(token), body)
            .await?)
    }
}
