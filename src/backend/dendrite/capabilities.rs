//! What Dendrite (0.13) can manage (see [`crate::backend::capabilities`]).

use crate::backend::capabilities::{Capabilities, Support};
use crate::backend::declaration::{NOT_SYNAPSE, NO_ACCESS_TOKEN_FILE, NO_ADOPTION, ONLY_MAS};

const NO_USER_TYPES: &str =
    "Dendrite has no user types, so bot and support accounts cannot be made on it; \
     leave user_type out (or regular) with homeserver: dendrite";
const NO_RESTRICTIONS: &str = "Dendrite (0.13) cannot lock, suspend or shadow-ban an account; \
     leave locked, suspended and shadow_banned out with homeserver: dendrite";
const NO_RATELIMIT: &str =
    "Dendrite (0.13) has no per-user rate-limit override (only its configuration's \
     rate_limiting.exempt_user_ids); leave ratelimit out with homeserver: dendrite";
const NO_ROOMS: &str =
    "Dendrite (0.13) has no admin API that joins a user to a room (its admin endpoints only \
     evacuate and purge); leave rooms out with homeserver: dendrite";
const NO_EMAILS: &str =
    "Dendrite's admin API (0.13) cannot set a user's e-mail addresses; leave emails out with homeserver: dendrite";
const NO_EXTERNAL_IDS: &str =
    "Dendrite (0.13) has no SSO identities to bind to an account; leave external_ids out with homeserver: dendrite";
const NO_AVATAR: &str = "matrix_user manages avatars on Synapse only (it compares an uploaded file's \
     content through Synapse's authenticated media API); leave avatar out with homeserver: dendrite";
const NO_ERASE: &str = "Dendrite cannot erase a deactivated user's messages and profile; \
     leave erase out with homeserver: dendrite";
/// E-mail addresses are managed only through MAS, which verifies them; the
/// homeservers' own admin APIs would add them unverified or not at all.
const NO_EMAIL: &str = "e-mail addresses are managed only with homeserver: mas";
const NO_UNDECLARED: &str = "Dendrite's admin API has no user list and no lock; only keep (the \
     default) is supported with homeserver: dendrite";

pub const CAPABILITIES: Capabilities = Capabilities {
    create: Support::Yes,
    admin: Support::Limited {
        note: "yes, through `dendrite_database` for an existing user",
    },
    deactivation: Support::Limited {
        note: "yes, through `dendrite_database`",
    },
    erase: Support::No { reason: NO_ERASE },
    user_type: Support::No {
        reason: NO_USER_TYPES,
    },
    displayname: Support::Yes,
    locked: Support::No {
        reason: NO_RESTRICTIONS,
    },
    suspended: Support::No {
        reason: NO_RESTRICTIONS,
    },
    shadow_banned: Support::No {
        reason: NO_RESTRICTIONS,
    },
    ratelimit: Support::No {
        reason: NO_RATELIMIT,
    },
    rooms: Support::No { reason: NO_ROOMS },
    external_ids: Support::No {
        reason: NO_EXTERNAL_IDS,
    },
    emails: Support::No { reason: NO_EMAILS },
    email: Support::No { reason: NO_EMAIL },
    upstream_links: ONLY_MAS,
    mas_skip_password_check: ONLY_MAS,
    mas_adopt_existing: NO_ADOPTION,
    access_token_file: NO_ACCESS_TOKEN_FILE,
    avatar: Support::No { reason: NO_AVATAR },
    undeclared: Support::No {
        reason: NO_UNDECLARED,
    },
    synapse_database: NOT_SYNAPSE,
};
