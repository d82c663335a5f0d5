//! When reading a server's user list pays, for the backends with a bulk
//! read ([`super::AccountServer::accounts`]).

/// Below this many declared users, one read each costs less than reading
/// the server's user list.
const LIST_MIN_USERS: usize = 20;
/// Listing pays only while the server holds at most this many accounts (or
/// listed items) per declared user.
const LIST_MAX_RATIO: u64 = 10;

/// How many listed items a bulk read of `declared` users may page through
/// before reading each alone is cheaper; `None` when they are too few to
/// list at all ([`super::AccountServer::accounts`] asks it for every
/// backend that lists).
pub(super) fn list_budget(declared: usize) -> Option<u64> {
    (declared >= LIST_MIN_USERS).then(|| LIST_MAX_RATIO * declared as u64)
}
