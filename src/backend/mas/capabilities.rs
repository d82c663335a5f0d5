//! What MAS's admin API (1.22) can manage idempotently (see
//! [`crate::backend::capabilities`]). A display name is set at creation
//! only, and compared later only where the homeserver shows it (see
//! [`super::homeserver`]).

use crate::backend::capabilities::{Capabilities, Support};
use crate::backend::declaration::NOT_SYNAPSE;

const NO_SUSPENSION: &str =
    "MAS's admin API (1.22) cannot suspend or shadow-ban a user, only lock it; \
     leave suspended and shadow_banned out with homeserver: mas (locked works)";
const NO_RATELIMIT: &str =
    "MAS has no per-user rate-limit override (the homeserver applies rate limits, and with homeserver: mas \
     matrix_user talks to MAS only); leave ratelimit out with homeserver: mas";
const NO_ROOMS: &str =
    "MAS holds accounts, not rooms (room membership is the homeserver's, and with homeserver: mas \
     matrix_user talks to MAS only); leave rooms out with homeserver: mas";
const NO_EXTERNAL_IDS: &str =
    "MAS keeps SSO identities as upstream OAuth links: declare them as upstream_links \
     (provider and subject) with homeserver: mas";
const NO_AVATAR: &str =
    "MAS has no avatars (the homeserver keeps profiles, and with homeserver: mas \
     matrix_user talks to MAS only); leave avatar out with homeserver: mas";
const NO_USER_TYPES: &str =
    "MAS has no user types, so bot and support accounts cannot be made through it; \
     leave user_type out (or regular) with homeserver: mas";

pub const CAPABILITIES: Capabilities = Capabilities {
    create: Support::Yes,
    admin: Support::Limited {
        note: "yes (MAS's \"can request admin\")",
    },
    deactivation: Support::Yes,
    erase: Support::Yes,
    user_type: Support::No {
        reason: NO_USER_TYPES,
    },
    displayname: Support::Since {
        version: "1.18",
        note: Some(
            "at creation, MAS 1.18 or later; an existing user's compared through `homeserver_url`",
        ),
    },
    locked: Support::Yes,
    suspended: Support::No {
        reason: NO_SUSPENSION,
    },
    shadow_banned: Support::No {
        reason: NO_SUSPENSION,
    },
    ratelimit: Support::No {
        reason: NO_RATELIMIT,
    },
    rooms: Support::No { reason: NO_ROOMS },
    external_ids: Support::No {
        reason: NO_EXTERNAL_IDS,
    },
    emails: Support::Yes,
    email: Support::Yes,
    upstream_links: Support::Yes,
    mas_skip_password_check: Support::Yes,
    mas_adopt_existing: Support::Yes,
    access_token_file: Support::Since {
        version: "1.5",
        note: None,
    },
    avatar: Support::No { reason: NO_AVATAR },
    undeclared: Support::Yes,
    synapse_database: NOT_SYNAPSE,
};
