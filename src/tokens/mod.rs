//! `matrix_registration_token`: makes a homeserver's registration tokens
//! match their declaration, through the same stages as the users:
//! arguments -> the server's rules -> connect -> read -> plan (pure) ->
//! apply -> report.

mod plan;
mod report;
mod token_file;

use std::ffi::OsString;
use std::path::Path;

use crate::backend::dendrite::Dendrite;
use crate::backend::mas::Mas;
use crate::backend::synapse::Synapse;
use crate::backend::{AccountServer, DeclarationError, RegistrationTokenServer, ServerError};
use crate::http::{Http, HttpError};
use crate::model::tokens::{DesiredToken, Registration, TokenArgs, TokenSource};
use crate::model::{ArgsError, HomeserverKind};
use plan::{Action, Plan, PlanError, Step, TokenView};
use report::TokenReport;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The connection declares what the chosen server does not accept.
    #[error(transparent)]
    Declaration(#[from] DeclarationError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// One token's request failed; what ran before it is in the result.
    #[error("{name}: {source}")]
    Token { name: String, source: ServerError },
    /// A `token_file` that cannot take the token the server generates.
    #[error("{field}: {problem}")]
    TokenFile { field: String, problem: String },
}

/// Runs the module on Ansible's args file and returns its JSON output and
/// exit code (0 success, 1 failure).
pub fn run(args_path: Option<OsString>) -> (String, i32) {
    let Some(path) = args_path else {
        return TokenReport::failed(
            "matrix_registration_token is an Ansible module: run it from a playbook".into(),
        );
    };
    let args = match TokenArgs::from_file(Path::new(&path)) {
        Ok(args) => args,
        Err(error) => return TokenReport::failed(error.to_string()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime always builds");
    let mut report = TokenReport::new(&args);
    let result = runtime.block_on(async {
        match args.connection.homeserver_kind() {
            HomeserverKind::Synapse => run_on::<Synapse>(&args, &mut report).await,
            HomeserverKind::Dendrite => run_on::<Dendrite>(&args, &mut report).await,
            HomeserverKind::Mas => run_on::<Mas>(&args, &mut report).await,
        }
    });
    report.finish(result.err().map(|error| error.to_string()))
}

/// Connects to `S` as `matrix_user` does, plans, applies and fills `report`.
async fn run_on<S>(args: &TokenArgs, report: &mut TokenReport) -> Result<(), TokenError>
where
    S: AccountServer + RegistrationTokenServer,
{
    let connection = &args.connection;
    let access = S::check_declaration(connection)?;
    let http = Http::new(&connection.endpoint()?)?;
    let server = S::connect(connection, access, http).await?;
    let observed = server.registration_tokens().await?;
    let now = crate::rfc3339::now_millis();
    let plan = plan::plan(&args.tokens, &observed, args.undeclared, now)?;
    for (token, step) in args.tokens.iter().zip(&plan.declared) {
        if let (TokenSource::File { path, .. }, Some(Action::Create { token: None, .. })) =
            (&token.source, &step.action)
        {
            token_file::check_writable(path).map_err(|problem| TokenError::TokenFile {
                field: token.field_name("token_file"),
                problem,
            })?;
        }
    }
    report.removed = S::REMOVED;
    report.registration = Some(
        server
            .registration_advertised()
            .await
            .map_err(|e| e.to_string()),
    );
    report.plan = plan.clone();
    if connection.check_mode {
        return Ok(());
    }
    apply(&server, args, plan, report).await
}

/// Sends each step's request in turn; `report.plan` shows what the server
/// answered, and on a failure, which steps landed (those before it).
async fn apply<S: RegistrationTokenServer>(
    server: &S,
    args: &TokenArgs,
    plan: Plan,
    report: &mut TokenReport,
) -> Result<(), TokenError> {
    report.plan = Plan::default();
    for (step, token) in plan.declared.iter().zip(&args.tokens) {
        let done = apply_step(server, step, Some(token)).await?;
        report.plan.declared.push(done);
    }
    for step in &plan.undeclared {
        let done = apply_step(server, step, None).await?;
        report.plan.undeclared.push(done);
    }
    Ok(())
}

/// Sends `step`'s request, if any, and returns it with what the server
/// answered as its `after`; writes a generated token to the `token_file`
/// of `token`, the step's declaration (`None` for an undeclared token).
async fn apply_step<S: RegistrationTokenServer>(
    server: &S,
    step: &Step,
    token: Option<&DesiredToken>,
) -> Result<Step, TokenError> {
    let failed = |source| TokenError::Token {
        name: step.name.clone(),
        source,
    };
    let after = match &step.action {
        None => step.after,
        Some(Action::Create {
            token: given,
            settings,
        }) => {
            let made = server
                .create_registration_token(given.as_ref(), *settings)
                .await
                .map_err(failed)?;
            if let Some(token) = token {
                if let TokenSource::File {
                    path,
                    existing: None,
                } = &token.source
                {
                    token_file::write(path, &made.token).map_err(|problem| {
                        TokenError::TokenFile {
                            field: token.field_name("token_file"),
                            problem: format!("the server made the token, but {problem}; the token exists on the server and nowhere else: delete it there (undeclared: delete does), fix the file's folder and run again"),
                        }
                    })?;
                }
            }
            Some(seen(&made))
        }
        Some(Action::Update {
            token,
            uses_allowed,
            expires,
            revive,
        }) => {
            let changed = server
                .update_registration_token(token, *uses_allowed, *expires, *revive)
                .await
                .map_err(failed)?;
            Some(seen(&changed))
        }
        Some(Action::Delete { token }) => {
            server
                .delete_registration_token(token)
                .await
                .map_err(failed)?;
            None
        }
    };
    Ok(Step {
        after,
        ..step.clone()
    })
}

fn seen(token: &crate::model::tokens::ObservedToken) -> TokenView {
    TokenView {
        uses_allowed: token.uses_allowed,
        expires: token.expires,
        pending: token.pending,
        completed: token.completed,
    }
}

/// In words, whether people can register with the tokens.
fn registration_message(registration: Registration) -> &'static str {
    match registration {
        Registration::Closed => "registration is closed on this homeserver (its client API refuses to register anyone), so nobody can use these tokens; open registration with a token required in the homeserver's configuration for them to be of use",
        Registration::OpenWithoutToken => "registration on this homeserver does not require a token (some way to register asks for none), so these tokens are pointless: anyone can register without one; require registration tokens in the homeserver's configuration",
        Registration::TokenRequired => "registration on this homeserver requires a token: these tokens let people register",
        Registration::TokensNotChecked { open: true } => "this homeserver never checks registration tokens (no registration flow asks for one, and it answers the token stage as unimplemented), and its registration is open: anyone can register without a token, so these tokens limit nobody",
        Registration::TokensNotChecked { open: false } => "this homeserver never checks registration tokens (no registration flow asks for one, and it answers the token stage as unimplemented), and its registration is closed: nobody can register with these tokens",
    }
}
