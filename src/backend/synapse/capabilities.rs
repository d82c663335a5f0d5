//! What Synapse can manage (see [`crate::backend::capabilities`]).

use crate::backend::capabilities::{Capabilities, Support};
use crate::backend::declaration::{NO_ACCESS_TOKEN_FILE, NO_ADOPTION, ONLY_MAS};

const SINGLE_EMAIL: &str = "email (one address, verified) is for homeserver: mas; \
     on Synapse declare emails, the exact list of the user's addresses";

pub const CAPABILITIES: Capabilities = Capabilities {
    create: Support::Yes,
    admin: Support::Yes,
    deactivation: Support::Yes,
    erase: Support::Yes,
    user_type: Support::Yes,
    displayname: Support::Yes,
    locked: Support::Yes,
    suspended: Support::Yes,
    shadow_banned: Support::Yes,
    ratelimit: Support::Yes,
    rooms: Support::Yes,
    external_ids: Support::Yes,
    emails: Support::Yes,
    email: Support::No {
        reason: SINGLE_EMAIL,
    },
    upstream_links: ONLY_MAS,
    mas_skip_password_check: ONLY_MAS,
    mas_adopt_existing: NO_ADOPTION,
    access_token_file: NO_ACCESS_TOKEN_FILE,
    avatar: Support::Yes,
    undeclared: Support::Yes,
    synapse_database: Support::Yes,
};
