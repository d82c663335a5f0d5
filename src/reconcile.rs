//! Reconciling: the pipeline that makes the server's accounts match the
//! declaration, arguments -> the server's rules -> connect -> read -> plan ->
//! apply -> report, `concurrency` users at a time. `main` only prints what
//! it returns.

use crate::model::ArgsErrorKind;
use std::borrow::Cow;
use std::ffi::OsString;
use std::path::Path;
use std::rc::Rc;

use futures_util::{stream, StreamExt};
use tokio::sync::Semaphore;

use crate::backend::dendrite::Dendrite;
use crate::backend::mas::Mas;
use crate::backend::synapse::Synapse;
use crate::backend::{AccountServer, ServerError, UserErrorKind};
use crate::http::Http;
use crate::matrix_id::UserId;
use crate::model::{
    Account, Change, DesiredUser, HomeserverKind, Observed, Undeclared, UserState, ATTRIBUTES,
};
use crate::model::{ArgsError, ModuleArgs};
use crate::plan::{self, PlanError};
use crate::report::{Report, UserOutcome};
use crate::secret::Secret;
use crate::undeclared;

/// Runs the module on Ansible's args file and returns its JSON output and
/// exit code (0 success, 1 failure).
pub fn run(args_path: Option<OsString>) -> (String, i32) {
    let Some(path) = args_path else {
        let report = Report::fatal(
            "matrix_user is an Ansible module: run it from a playbook, or give it the path of a JSON file of arguments".into(),
        );
        return (report.printed(), 1);
    };
    let args = match ModuleArgs::from_file(Path::new(&path)) {
        Ok(args) => args,
        Err(error) => return (Report::fatal(error.to_string()).printed(), 1),
    };
    // Lets the tests prove that a panic still prints one masked JSON object;
    // release builds (what ships) have no such trigger.
    #[cfg(debug_assertions)]
    if std::env::var_os("MATRIX_USER_TEST_PANIC").is_some() {
        let password = args.users.iter().find_map(|user| user.password.as_ref());
        panic!(
            "deliberate test panic, holding the password {}",
            password.map_or("", |p| p.expose())
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime always builds");
    let mut report = tokio::task::LocalSet::new().block_on(&runtime, reconcile_on_server(&args));
    report.warnings = args.warnings.clone();
    let code = i32::from(report.failed());
    (report.printed(), code)
}

async fn reconcile_on_server(args: &ModuleArgs) -> Report {
    match args.homeserver_kind() {
        HomeserverKind::Synapse => reconcile_on::<Synapse>(args).await,
        HomeserverKind::Dendrite => reconcile_on::<Dendrite>(args).await,
        HomeserverKind::Mas => reconcile_on::<Mas>(args).await,
    }
}

/// Checks the declaration against the server `S`, refuses the service
/// account among the users, both before anything is sent, then connects.
async fn reconcile_on<S: AccountServer + 'static>(args: &ModuleArgs) -> Report {
    let endpoint = match args.endpoint() {
        Ok(endpoint) => endpoint,
        Err(error) => return Report::fatal(error.to_string()),
    };
    let access = match S::check_declaration(args) {
        Ok(access) => access,
        Err(error) => return Report::fatal(error.to_string()),
    };
    if let Err(message) = refuse_service_account::<S>(args) {
        return Report::fatal(message);
    }
    let args = &match in_server_forms::<S>(args) {
        Ok(args) => args,
        Err(message) => return Report::fatal(message),
    };
    let http = match Http::new(&endpoint) {
        Ok(http) => http,
        Err(error) => return Report::fatal(error.to_string()),
    };
    match S::connect(args, access, http).await {
        Ok(server) => reconcile_users(Rc::new(server), args).await,
        Err(error) => Report::fatal(error.to_string()),
    }
}

/// The service account is how the module reaches the server, not a user it
/// manages: deactivating or demoting it would break every later run, and
/// changing its password would lose its token. Refused before anything is
/// sent, whatever the declared state; matched by localpart, as a full ID of
/// another server is refused later anyway.
fn refuse_service_account<S: AccountServer>(args: &ModuleArgs) -> Result<(), String> {
    let credentials = &args.credentials;
    let in_use = credentials.admin_token.is_none()
        && credentials.shared_secret.is_some()
        && S::HAS_SERVICE_ACCOUNT;
    let account = credentials.service_account.localpart();
    let refused: Vec<String> = args
        .users
        .iter()
        .filter(|user| in_use && user.username.localpart() == account)
        .map(|user| {
            format!(
                "{}: {account} is the service account matrix_user acts as (service_account), not a user it manages; remove it from the users, or set service_account to another name",
                user.field_name("username")
            )
        })
        .collect();
    match refused.is_empty() {
        true => Ok(()),
        false => Err(refused.join("; ")),
    }
}

/// The declaration with each e-mail address in the form the server `S`
/// keeps it in ([`AccountServer::email_form`]). An address declared twice
/// (as `S` may compare them), for one user or for two, is refused by field
/// name before anything is sent: only one account can hold it, so the run
/// could not make both declarations true.
fn in_server_forms<S: AccountServer>(args: &ModuleArgs) -> Result<ModuleArgs, String> {
    let mut args = args.clone();
    // Each address so far: the user's index, its field, its form.
    let mut declared: Vec<(usize, String, String)> = Vec::new();
    for (index, user) in args.users.iter_mut().enumerate() {
        let (emails_field, email_field) = (user.field_name("emails"), user.field_name("email"));
        let listed = user.emails.iter_mut().flatten().enumerate();
        let fields = listed
            .map(|(i, email)| (format!("{emails_field}[{i}]"), email))
            .chain(
                user.email
                    .as_mut()
                    .map(|email| (email_field.clone(), email)),
            );
        for (field, email) in fields {
            let not_accepted = |accepted: String| {
                ArgsError::at(
                    field.clone(),
                    ArgsErrorKind::NotAccepted {
                        value: email.clone(),
                        accepted,
                    },
                )
                .to_string()
            };
            let form = S::email_form(email).map_err(not_accepted)?;
            let first = declared
                .iter()
                .find(|(_, _, other)| S::may_share_email(other, &form));
            match first {
                Some((first, other, _)) if *first == index => {
                    return Err(not_accepted(format!(
                        "each address once: it is {other} again (the server compares addresses without regard to the case of letters)"
                    )))
                }
                Some((_, other, _)) => {
                    return Err(not_accepted(format!(
                        "each address for one user only: {other} declares it too (the server compares addresses without regard to the case of letters)"
                    )))
                }
                None => {}
            }
            declared.push((index, field, form.clone()));
            *email = form;
        }
    }
    Ok(args)
}

/// Makes every declared user match its declaration, `concurrency` at a time.
/// One user's failure is reported and does not stop the others.
async fn reconcile_users<B: AccountServer + 'static>(backend: Rc<B>, args: &ModuleArgs) -> Report {
    let mut resolved = Vec::with_capacity(args.users.len());
    let mut refused = Vec::new();
    for user in &args.users {
        match user.username.on_server(backend.server_name()) {
            Ok(id) => resolved.push(id),
            Err(reason) => refused.push(format!("{}: {reason}", user.field_name("username"))),
        }
    }
    if !refused.is_empty() {
        // Found only now that the server name is known; still nothing was changed.
        return Report::fatal(refused.join("; "));
    }
    let undeclared = match choose_undeclared(&backend, args, &resolved).await {
        Ok(chosen) => chosen,
        Err(message) => return Report::fatal(message),
    };
    let mut prefetched = match backend.accounts(&resolved, &args.users).await {
        Ok(accounts) => accounts,
        Err(error) => return Report::fatal(error.to_string()),
    };

    let declared = args.users.iter().zip(resolved).map(|(desired, user)| {
        // A user declaring what the bulk read did not show is read alone.
        let known = prefetched
            .as_mut()
            .map(|accounts| accounts.remove(&user))
            .filter(|account| match account {
                Some(account) => !account.lacks_any_of(desired),
                // Read alone, the read looks up the holders of what it claims.
                None => !desired.claims_identifiers(),
            });
        (Cow::Borrowed(desired), user, known)
    });
    let undeclared_ids: Vec<String> = undeclared.iter().map(|(u, _)| u.to_string()).collect();
    let undeclared = undeclared.into_iter().map(|(user, account)| {
        let desired = undeclared::declaration(&user, args.undeclared.action);
        (Cow::Owned(desired), user, Some(Some(account)))
    });
    // Each user's work is made only when a slot frees, so a run of 100,000
    // users holds `concurrency` of them in flight, not 100,000.
    let mut outcomes: Vec<Option<UserOutcome>> = std::iter::repeat_with(|| None)
        .take(args.users.len() + undeclared_ids.len())
        .collect();
    let server = backend.as_ref();
    let mut finished = stream::iter(declared.chain(undeclared).enumerate())
        .map(|(index, (desired, user, known))| async move {
            let mut outcome = reconcile_user(server, &user, &desired, known, args.check_mode).await;
            if !args.diff {
                // Only the diff shows them: 100,000 users need not keep them.
                outcome.before = None;
                outcome.after = None;
            }
            (index, outcome)
        })
        .buffer_unordered(args.concurrency);
    while let Some((index, outcome)) = finished.next().await {
        outcomes[index] = Some(outcome);
    }
    drop(finished);
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every user is reconciled"))
        .collect();
    Report {
        outcomes,
        fatal: None,
        check_mode: args.check_mode,
        diff: args.diff,
        undeclared: (args.undeclared.action != Undeclared::Keep).then_some(undeclared_ids),
        waited: backend.waited(),
        warnings: Vec::new(),
    }
}

/// The undeclared accounts `undeclared: lock | deactivate` touches, as
/// listed; refused, before any change, when they are more than
/// `undeclared_max`. Application-service users are found by a read each,
/// `concurrency` at a time, made only for the accounts left after the
/// declaration, the spared accounts and `undeclared_ignore`.
async fn choose_undeclared<B: AccountServer + 'static>(
    backend: &Rc<B>,
    args: &ModuleArgs,
    declared: &[UserId],
) -> Result<Vec<(UserId, Account)>, String> {
    let policy = &args.undeclared;
    if policy.action == Undeclared::Keep {
        return Ok(Vec::new());
    }
    let listed = backend
        .local_accounts()
        .await
        .map_err(|e| format!("undeclared: {e}"))?;
    // Spared even when admin_token is what this run acts with: other runs
    // act as the service account.
    let spared: Vec<&str> = B::HAS_SERVICE_ACCOUNT
        .then(|| args.credentials.service_account.localpart())
        .into_iter()
        .collect();
    let candidates = undeclared::candidates(policy, declared, &spared, listed);
    let slots = Rc::new(Semaphore::new(args.concurrency));
    let reads: Vec<_> = candidates
        .iter()
        .map(|(user, _)| {
            let (backend, slots, user) = (backend.clone(), slots.clone(), user.clone());
            tokio::task::spawn_local(async move {
                let _slot = slots
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                backend.is_appservice_user(&user).await
            })
        })
        .collect();
    let mut chosen = Vec::with_capacity(candidates.len());
    for (candidate, read) in candidates.into_iter().zip(reads) {
        let appservice = read.await.expect("reads do not panic");
        if !appservice.map_err(|e| format!("undeclared: {e}"))? {
            chosen.push(candidate);
        }
    }
    let users: Vec<UserId> = chosen.iter().map(|(user, _)| user.clone()).collect();
    undeclared::refuse_too_many(policy, &users)?;
    Ok(chosen)
}

/// `known` is the prefetched account (`Some(None)`: known not to exist).
async fn reconcile_user<B: AccountServer>(
    backend: &B,
    user: &UserId,
    desired: &DesiredUser,
    known: Option<Option<Account>>,
    check_mode: bool,
) -> UserOutcome {
    let mut outcome = UserOutcome {
        user: user.to_string(),
        state: desired.state,
        changes: Vec::new(),
        before: None,
        after: None,
        error: None,
        landed: Vec::new(),
        partly_applied: false,
    };
    let mut known = known;
    // The password of a registration of this run that got no answer, and so
    // may have created the user.
    let mut unanswered_creation = None;
    // A second pass happens only when someone else created the user between
    // our read and our write, or our registration's answer was lost: read it
    // again and reconcile what is there.
    for pass in 0..2 {
        let observed = match observe(backend, user, desired, known.take()).await {
            Ok(observed) => observed,
            Err(error) => {
                outcome.error = Some(error.to_string());
                break;
            }
        };
        let changes = match plan::plan(desired, &observed) {
            Ok(mut changes) => {
                changes.extend(plan::plan_access_token(desired, &observed, &changes));
                changes
            }
            Err(PlanError::NotSeen { fact }) => {
                outcome.error = Some(backend.not_seen(user, desired, fact).to_string());
                break;
            }
            Err(error) => {
                outcome.error = Some(error.to_string());
                break;
            }
        };
        if let Err(error) = backend.refuse_impossible(user, &changes) {
            outcome.error = Some(error.to_string());
            break;
        }
        let default_displayname = backend.default_displayname(user);
        outcome.after = plan::predict(
            desired,
            observed.account.as_ref(),
            &changes,
            default_displayname,
        )
        .map(Box::new);
        outcome.before = observed.account.map(Box::new);
        outcome.changes = changes;
        if check_mode || outcome.changes.is_empty() {
            break;
        }
        let creation_password = outcome.changes.iter().find_map(|change| match change {
            Change::Create { password } => Some(password.clone()),
            _ => None,
        });
        let applied = match &creation_password {
            Some(password) => create(backend, user, desired, password, &outcome.changes).await,
            None => backend
                .update(user, desired, &outcome.changes)
                .await
                .map_err(|error| {
                    let landed = error.landed().to_vec();
                    (error, landed)
                }),
        };
        match applied {
            Ok(()) => break,
            Err((
                ServerError::User {
                    kind: UserErrorKind::CreatedMeanwhile,
                    ..
                },
                _,
            )) if pass == 0 => continue,
            Err((
                ServerError::User {
                    kind: UserErrorKind::RegistrationUnanswered { .. },
                    ..
                },
                _,
            )) if pass == 0 => {
                unanswered_creation = creation_password;
                continue;
            }
            Err((error, landed)) => {
                outcome.error = Some(error.to_string());
                outcome.landed = landed;
                // Some steps may have landed before the failure: say so, and
                // count the user as changed, rather than hide them.
                let now = backend.account(user, desired).await;
                outcome.partly_applied = !matches!(now, Ok(ref account) if unchanged(outcome.before.as_deref(), account.as_ref()));
                break;
            }
        }
    }
    let found_after_unanswered_creation = outcome.error.is_none() && outcome.before.is_some();
    if let (Some(password), true) = (unanswered_creation, found_after_unanswered_creation) {
        // Missing at our first read, there now: our registration made it,
        // unless another client's landed first in the same instant (ours was
        // then refused, and the refusal lost), which no read can tell apart.
        // Reported as created, with what the second pass still changed.
        outcome.changes.insert(0, Change::Create { password });
        outcome.before = None;
    }
    outcome
}

/// Creates `user`, then applies what creation cannot set (the restrictions
/// declared for it), the rest of `changes`. A failure comes with the
/// changes that landed before it: the creation, once it was made.
async fn create<B: AccountServer>(
    backend: &B,
    user: &UserId,
    desired: &DesiredUser,
    password: &Secret,
    changes: &[Change],
) -> Result<(), (ServerError, Vec<Change>)> {
    if let Err(error) = backend.create(user, desired, password).await {
        let landed = error.landed().to_vec();
        return Err((error, landed));
    }
    let (created, rest): (Vec<Change>, Vec<Change>) = changes
        .iter()
        .cloned()
        .partition(|c| matches!(c, Change::Create { .. }));
    match rest.is_empty() {
        true => Ok(()),
        false => backend.update(user, desired, &rest).await.map_err(|error| {
            let landed = created.into_iter().chain(error.landed().to_vec()).collect();
            (error, landed)
        }),
    }
}

/// Whether a read after a failure finds the account as the first read did. A
/// restriction, rate-limit override, membership, e-mail list, SSO identity
/// list or avatar only one of them showed (Synapse's list has none of those,
/// its read of one user has) is no difference.
fn unchanged(before: Option<&Account>, now: Option<&Account>) -> bool {
    match (before, now) {
        (Some(before), Some(now)) => {
            let mut now = now.clone();
            for attribute in ATTRIBUTES {
                attribute.forget_unseen(before, &mut now);
            }
            now == *before
        }
        _ => before == now,
    }
}

async fn observe<B: AccountServer>(
    backend: &B,
    user: &UserId,
    desired: &DesiredUser,
    known: Option<Option<Account>>,
) -> Result<Observed, ServerError> {
    let account = match known {
        Some(account) => account,
        None => backend.account(user, desired).await?,
    };
    let password_matches = match (
        &desired.password,
        plan::needs_password_check(desired, account.as_ref()),
    ) {
        (Some(password), true) => Some(backend.password_matches(user, password).await?),
        _ => None,
    };
    let token_read = desired.access_token_file.is_some() && desired.state == UserState::Present;
    let access_token_valid = match &account {
        Some(_) if token_read => Some(backend.access_token_valid(user, desired).await?),
        _ => None,
    };
    Ok(Observed {
        account,
        password_matches,
        access_token_valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Restrictions, Seen};

    fn account(suspended: Seen<bool>, admin: bool) -> Option<Account> {
        Some(Account {
            admin: Seen::Known(admin),
            deactivated: Seen::Known(false),
            displayname: Seen::Known(None),
            restrictions: Restrictions {
                suspended,
                ..Restrictions::default()
            },
            ..Account::unseen()
        })
    }

    #[test]
    fn a_restriction_only_the_second_read_shows_is_no_change() {
        let listed = account(Seen::Unknown, false);
        assert!(unchanged(
            listed.as_ref(),
            account(Seen::Known(true), false).as_ref()
        ));
        assert!(!unchanged(
            listed.as_ref(),
            account(Seen::Known(true), true).as_ref()
        ));
        let read = account(Seen::Known(false), false);
        assert!(!unchanged(
            read.as_ref(),
            account(Seen::Known(true), false).as_ref()
        ));
        assert!(!unchanged(None, read.as_ref()));
    }
}
