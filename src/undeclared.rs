//! Stage 3 for the users nobody declared (`undeclared: lock | deactivate`):
//! which of the listed local accounts to touch, a pure function like
//! [`crate::plan`]. Each account chosen becomes a declaration of its own
//! (`{username, locked: true}` or `{username, state: absent}`), reconciled
//! like a declared user, so that check mode, diff and `changed` are the same.

use std::collections::HashSet;

use crate::matrix_id::UserId;
use crate::model::{
    Account, DesiredUser, Restrictions, Seen, Undeclared, UndeclaredPolicy, UserState,
};

/// How many user IDs a refusal names before it only counts the rest.
const NAMED_IN_REFUSAL: usize = 20;

/// The accounts `policy` may touch among `listed`: not declared, not
/// `spared` (localparts: the service account), not matched by an ignore
/// pattern, and not already locked (for `lock`) or deactivated. Whether an
/// account belongs to an application service is the caller's next read.
pub fn candidates(
    policy: &UndeclaredPolicy,
    declared: &[UserId],
    spared: &[&str],
    listed: Vec<(UserId, Account)>,
) -> Vec<(UserId, Account)> {
    // A set: a server of 100,000 accounts, all declared, is checked in linear time.
    let declared: HashSet<&UserId> = declared.iter().collect();
    listed
        .into_iter()
        .filter(|(user, account)| {
            let localpart = user.localpart();
            let done = account.deactivated == Seen::Known(true)
                || (policy.action == Undeclared::Lock
                    && account.restrictions.locked == Seen::Known(true));
            !done
                && !declared.contains(&user)
                && !spared.contains(&localpart)
                && !policy.ignore.iter().any(|p| p.is_match(localpart))
        })
        .collect()
}

/// Refuses, before any change, to touch more accounts than `undeclared_max`
/// allows, naming them (the first few) so that the admin can check them.
pub fn refuse_too_many(policy: &UndeclaredPolicy, chosen: &[UserId]) -> Result<(), String> {
    if chosen.len() <= policy.max {
        return Ok(());
    }
    let mut named: Vec<String> = chosen
        .iter()
        .take(NAMED_IN_REFUSAL)
        .map(ToString::to_string)
        .collect();
    if chosen.len() > NAMED_IN_REFUSAL {
        named.push(format!("and {} more", chosen.len() - NAMED_IN_REFUSAL));
    }
    Err(format!(
        "undeclared: {} would {} {} users nobody declared, more than undeclared_max ({}); nothing was changed. \
         Declare the users to keep, spare them with undeclared_ignore, or raise undeclared_max to {} if they are all meant: {}",
        policy.action.name(),
        policy.action.name(),
        chosen.len(),
        policy.max,
        chosen.len(),
        named.join(", ")
    ))
}

/// What an undeclared `user` is made to match: locked, or deactivated
/// without erasing (deactivating cannot be undone, erasing even less).
pub fn declaration(user: &UserId, action: Undeclared) -> DesiredUser {
    DesiredUser {
        state: match action {
            Undeclared::Deactivate => UserState::Absent,
            Undeclared::Keep | Undeclared::Lock => UserState::Present,
        },
        restrictions: Restrictions {
            locked: (action == Undeclared::Lock).then_some(true),
            ..Restrictions::default()
        },
        ..DesiredUser::managing_nothing("undeclared".into(), user.username())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Observed};
    use crate::plan;

    fn user(localpart: &str) -> UserId {
        UserId::listed(&format!("@{localpart}:x"), "x").unwrap()
    }

    fn account(locked: bool, deactivated: bool) -> Account {
        Account {
            admin: Seen::Known(false),
            deactivated: Seen::Known(deactivated),
            displayname: Seen::Known(None),
            restrictions: Restrictions {
                locked: Seen::Known(locked),
                ..Restrictions::default()
            },
            ..Account::unseen()
        }
    }

    fn policy(action: Undeclared, ignore: &[&str]) -> UndeclaredPolicy {
        UndeclaredPolicy {
            action,
            ignore: ignore
                .iter()
                .map(|p| regex::Regex::new(&format!("^(?:{p})$")).unwrap())
                .collect(),
            max: 10,
        }
    }

    fn chosen(policy: &UndeclaredPolicy, listed: &[(&str, bool, bool)]) -> Vec<String> {
        let listed = listed
            .iter()
            .map(|&(name, locked, deactivated)| (user(name), account(locked, deactivated)))
            .collect();
        candidates(policy, &[user("alice")], &["service"], listed)
            .into_iter()
            .map(|(user, _)| user.localpart().to_string())
            .collect()
    }

    #[test]
    fn only_undeclared_unspared_unignored_accounts_not_yet_done_are_chosen() {
        let listed = [
            ("alice", false, false),
            ("service", false, false),
            ("bot-1", false, false),
            ("robot", false, false),
            ("old", true, false),
            ("gone", false, true),
            ("gone-locked", true, true),
            ("eve", false, false),
        ];
        let lock = policy(Undeclared::Lock, &["bot-.*", "bot"]);
        assert_eq!(chosen(&lock, &listed), ["robot", "eve"]);
        // Deactivating also takes the locked ones, never the deactivated.
        let deactivate = policy(Undeclared::Deactivate, &["bot-.*", "bot"]);
        assert_eq!(chosen(&deactivate, &listed), ["robot", "old", "eve"]);
    }

    #[test]
    fn the_limit_names_the_count_and_the_option() {
        let mut lock = policy(Undeclared::Lock, &[]);
        lock.max = 2;
        let users: Vec<UserId> = (0..25).map(|i| user(&format!("u{i}"))).collect();
        assert_eq!(refuse_too_many(&lock, &users[..2]), Ok(()));
        let message = refuse_too_many(&lock, &users).unwrap_err();
        assert!(
            message.starts_with("undeclared: lock would lock 25 users nobody declared, more than undeclared_max (2); nothing was changed."),
            "{message}"
        );
        assert!(message.contains("raise undeclared_max to 25"), "{message}");
        assert!(message.ends_with("@u19:x, and 5 more"), "{message}");
    }

    #[test]
    fn the_declaration_plans_one_lock_or_one_deactivation() {
        let observed = Observed {
            account: Some(account(false, false)),
            password_matches: None,
            access_token_valid: None,
        };
        let lock = declaration(&user("_bridge_1"), Undeclared::Lock);
        assert_eq!(
            plan::plan(&lock, &observed),
            Ok(vec![Change::Restrict(
                crate::model::Restriction::Locked,
                true
            )])
        );
        let deactivate = declaration(&user("eve"), Undeclared::Deactivate);
        assert_eq!(
            plan::plan(&deactivate, &observed),
            Ok(vec![Change::Deactivate { erase: false }])
        );
    }
}
