//! What several servers share for refusing, before any request, what they
//! cannot do with the declaration (see
//! [`super::AccountServer::check_declaration`]): the error, and the reasons
//! of the capability tables ([`super::capabilities`]) that more than one
//! server gives. Each refusal names the field and says what to declare
//! instead.

use super::capabilities::Support;

/// What the chosen server cannot do with the declaration, found before
/// anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    /// No credentials this server accepts; the message says which to give.
    #[error("{0}")]
    NoCredentials(&'static str),
    /// The declared `field` cannot be taken; `kind` says why.
    #[error("{field}: {kind}")]
    Field { field: String, kind: FieldErrorKind },
}

/// Why this server cannot take a declared field ([`DeclarationError::Field`]).
#[derive(Debug, thiserror::Error)]
pub enum FieldErrorKind {
    /// The field declares what this server cannot manage; `reason` says why
    /// and what to declare instead.
    #[error("{reason}")]
    Unsupported { reason: &'static str },
    /// The field holds a value this server would refuse (the value is not
    /// shown); `problem` says what it accepts.
    #[error("{problem}")]
    Refused { problem: String },
}

impl DeclarationError {
    /// `field` declares what this server cannot manage, for `reason`.
    pub fn unsupported(field: impl Into<String>, reason: &'static str) -> DeclarationError {
        let kind = FieldErrorKind::Unsupported { reason };
        DeclarationError::Field {
            field: field.into(),
            kind,
        }
    }

    /// `field` holds a value this server would refuse, for `problem`.
    pub fn refused(field: impl Into<String>, problem: impl Into<String>) -> DeclarationError {
        let kind = FieldErrorKind::Refused {
            problem: problem.into(),
        };
        DeclarationError::Field {
            field: field.into(),
            kind,
        }
    }
}

/// A homeserver's refusal of the options only MAS has.
pub(super) const ONLY_MAS: Support = Support::No {
    reason: "only homeserver: mas takes it",
};

/// A homeserver's refusal of `mas_adopt_existing`.
pub(super) const NO_ADOPTION: Support = Support::No {
    reason:
        "only MAS keeps accounts apart from the homeserver; leave it out unless homeserver: mas",
};

/// A homeserver's refusal of `access_token_file`.
pub(super) const NO_ACCESS_TOKEN_FILE: Support = Support::No {
    reason: "personal access tokens are kept only with homeserver: mas for now (MAS's personal \
             sessions); leave it out",
};

/// The refusal of `synapse_database` by the servers that are not Synapse.
pub(super) const NOT_SYNAPSE: Support = Support::No {
    reason: "it is Synapse's database, read only with homeserver: synapse (Dendrite's is \
             dendrite_database); leave it out",
};

/// Why a binary built without the `databases` cargo feature refuses
/// `dendrite_database` and `synapse_database`.
#[cfg(not(feature = "databases"))]
pub(super) const DATABASES_NOT_BUILT_IN: &str =
    "this matrix_user binary was built without the databases \
     cargo feature, so it cannot open a homeserver's database; use a binary built with default \
     features (tools/just build, the collection), or leave it out";

/// Refuses the database option `field` when it is `given` to a binary
/// without the database drivers; a binary with them takes it.
#[cfg(feature = "databases")]
pub(super) fn refuse_without_databases(_field: &str, _given: bool) -> Result<(), DeclarationError> {
    Ok(())
}

#[cfg(not(feature = "databases"))]
pub(super) fn refuse_without_databases(field: &str, given: bool) -> Result<(), DeclarationError> {
    match given {
        true => Err(DeclarationError::unsupported(field, DATABASES_NOT_BUILT_IN)),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{dendrite, mas, synapse, AccountServer};
    use crate::model::HomeserverKind;
    use crate::model::ModuleArgs;
    use serde_json::{json, Value};

    /// Refuses what the chosen server cannot do with the declaration (see
    /// [`AccountServer::check_declaration`]); the module calls each server's own.
    fn check_declaration(args: &ModuleArgs) -> Result<(), DeclarationError> {
        match args.homeserver_kind() {
            HomeserverKind::Synapse => synapse::Synapse::check_declaration(args).map(drop),
            HomeserverKind::Dendrite => dendrite::Dendrite::check_declaration(args).map(drop),
            HomeserverKind::Mas => mas::Mas::check_declaration(args).map(drop),
        }
    }

    /// Parses `value` as the module's arguments and checks them against the chosen server.
    fn declare(value: Value) -> Result<ModuleArgs, String> {
        let args = ModuleArgs::from_map(value.as_object().unwrap()).map_err(|e| e.to_string())?;
        check_declaration(&args).map_err(|e| e.to_string())?;
        Ok(args)
    }

    /// Asserts that `declared` is refused with a message starting with
    /// `start`, and returns the message.
    fn assert_refused(declared: Result<ModuleArgs, String>, start: &str) -> String {
        let message = declared.unwrap_err();
        assert!(message.starts_with(start), "{message}");
        message
    }

    fn error_of(value: Value) -> String {
        declare(value).unwrap_err()
    }

    fn base() -> Value {
        json!({"homeserver_url": "http://127.0.0.1:8008/", "registration_shared_secret": "s3cret-value"})
    }

    /// A MAS connection's arguments.
    fn mas_base() -> Value {
        json!({"homeserver": "mas", "mas_url": "http://127.0.0.1:8080",
            "mas_client_id": "01J0000000000000000000000", "mas_client_secret": "client-secret"})
    }

    /// `server`'s arguments with `user`'s fields added.
    fn with_user(mut server: Value, user: Value) -> Value {
        server
            .as_object_mut()
            .unwrap()
            .extend(user.as_object().unwrap().clone());
        server
    }

    /// Synapse's base arguments on Dendrite, with `user`'s fields.
    fn on_dendrite(user: Value) -> Value {
        let mut args = with_user(base(), user);
        args["homeserver"] = json!("dendrite");
        args
    }

    #[test]
    fn synapse_database_is_synapses_alone_and_refused_elsewhere_by_name() {
        let database =
            json!({"username": "a", "synapse_database": "/var/lib/synapse/homeserver.db"});
        for server in [
            on_dendrite(database.clone()),
            with_user(mas_base(), database.clone()),
        ] {
            assert_refused(
                declare(server),
                "synapse_database: it is Synapse's database, read only with homeserver: synapse",
            );
        }
        #[cfg(feature = "databases")]
        assert!(declare(with_user(base(), database)).is_ok());
        #[cfg(not(feature = "databases"))]
        assert!(error_of(with_user(base(), database)).starts_with(
            "synapse_database: this matrix_user binary was built without the databases cargo feature"
        ));
    }

    #[test]
    fn credentials_are_required() {
        assert_refused(
            declare(json!({"homeserver_url": "http://x", "username": "alice"})),
            "no credentials: give registration_shared_secret",
        );
    }

    #[test]
    fn mas_refuses_what_it_cannot_compare() {
        let mas = |user: Value| declare(with_user(mas_base(), user));
        // Set at creation (MAS 1.18 and later, checked once connected).
        mas(json!({"users": [{"username": "a", "displayname": "A"}]})).unwrap();
        assert_refused(
            mas(json!({"username": "a", "user_type": "bot"})),
            "user_type: MAS has no user types",
        );
        let args = mas(json!({"username": "a", "user_type": "regular", "email": "a@example.com"}))
            .unwrap();
        assert_eq!(args.endpoint().unwrap().url, "http://127.0.0.1:8080");
        assert!(args.credentials.mas_client.is_some());
    }

    #[test]
    fn only_mas_takes_the_mas_options() {
        let message = error_of(with_user(
            base(),
            json!({"users": [{"username": "a", "mas_skip_password_check": true}]}),
        ));
        assert_eq!(
            message,
            "users[0].mas_skip_password_check: only homeserver: mas takes it"
        );
        let mut dendrite = with_user(
            base(),
            json!({"username": "a", "mas_skip_password_check": true}),
        );
        dendrite["homeserver"] = json!("dendrite");
        // A binary without the drivers would refuse dendrite_database first.
        if cfg!(feature = "databases") {
            dendrite["dendrite_database"] = json!("/var/lib/dendrite/userapi.db");
        }
        assert_eq!(
            error_of(dendrite),
            "mas_skip_password_check: only homeserver: mas takes it"
        );
        let linked =
            json!({"username": "a", "upstream_links": [{"provider": "SSO", "subject": "a"}]});
        assert_eq!(
            error_of(with_user(base(), linked)),
            "upstream_links: only homeserver: mas takes it"
        );
        declare(with_user(
            base(),
            json!({"username": "a", "mas_skip_password_check": false}),
        ))
        .unwrap();
    }

    #[test]
    fn dendrite_refuses_what_it_has_no_notion_of() {
        // A binary without the drivers refuses dendrite_database first.
        let database = cfg!(feature = "databases");
        let dendrite = |user: Value| {
            let mut args = on_dendrite(user);
            if database {
                args["dendrite_database"] = json!("/var/lib/dendrite/userapi.db");
            }
            declare(args)
        };
        assert_refused(
            dendrite(json!({"users": [{"username": "a", "user_type": "bot"}]})),
            "users[0].user_type: Dendrite has no user types",
        );
        assert_refused(
            dendrite(json!({"username": "a", "state": "absent", "erase": true})),
            "erase: Dendrite cannot erase",
        );
        let message = assert_refused(
            dendrite(json!({"username": "a", "password": "short7!"})),
            "password: Dendrite accepts only passwords of 8 to 512 bytes",
        );
        assert!(!message.contains("short7!"), "{message}");
        let args =
            dendrite(json!({"username": "a", "password": "eight ch", "user_type": "regular"}))
                .unwrap();
        assert_eq!(args.credentials.dendrite_database.is_some(), database);
    }

    #[test]
    fn emails_and_external_ids_are_refused_by_name_where_unsupported() {
        let user = |field: &str| {
            let value = match field {
                "emails" => json!(["a@example.com"]),
                _ => json!([{"auth_provider": "oidc-github", "external_id": "1"}]),
            };
            json!({"users": [{"username": "a", "password": "eight ch", field: value}]})
        };
        let dendrite = |user: Value| error_of(on_dendrite(user));
        let mas = |user: Value| error_of(with_user(mas_base(), user));
        let expectations = [
            (
                dendrite(user("emails")),
                "users[0].emails: Dendrite's admin API (0.13) cannot set",
            ),
            (
                dendrite(user("external_ids")),
                "users[0].external_ids: Dendrite (0.13) has no SSO identities",
            ),
            (
                mas(user("external_ids")),
                "users[0].external_ids: MAS keeps SSO identities as upstream OAuth links",
            ),
        ];
        for (message, expected) in expectations {
            assert!(message.starts_with(expected), "{message}");
        }
        // MAS takes emails, or email, but not both for one user.
        declare(with_user(mas_base(), user("emails"))).unwrap();
        let both = json!({"username": "a", "email": "a@example.com", "emails": ["a@example.com"]});
        let message = mas(both);
        assert!(
            message.starts_with("email: declare either email (one address the user must have; its others stay) or emails"),
            "{message}"
        );
        // Synapse takes both, and points the single MAS-style email at emails.
        let mut synapse = base();
        synapse["users"] = json!([{"username": "a", "emails": ["a@example.com"],
            "external_ids": [{"auth_provider": "saml", "external_id": "a"}]}]);
        assert!(declare(synapse).is_ok());
        let mut single = base();
        single["username"] = json!("a");
        single["email"] = json!("a@example.com");
        assert_refused(declare(single), "email: email (one address, verified) is for homeserver: mas; on Synapse declare emails");
    }

    #[test]
    fn servers_without_user_types_refuse_extra_ones_too() {
        let mut dendrite = base();
        dendrite["homeserver"] = json!("dendrite");
        dendrite["username"] = json!("a");
        dendrite["user_type"] = json!("bridge");
        assert_refused(declare(dendrite), "user_type: Dendrite has no user types");
        assert_refused(
            declare(
                json!({"homeserver": "mas", "mas_url": "http://127.0.0.1:8080",
            "mas_client_id": "01J0000000000000000000000", "mas_client_secret": "client-secret",
            "username": "a", "user_type": "bridge"}),
            ),
            "user_type: MAS has no user types",
        );
    }
}
