//! `matrix_user`: an Ansible binary module that makes Matrix homeserver users
//! match what a playbook declares, and `matrix_registration_token`, which
//! does the same for registration tokens ([`module`] says which one a run
//! is). Ansible runs it with the path of a JSON args file and reads one JSON
//! object from stdout.

mod args;
mod backend;
mod host_file;
mod http;
mod matrix_id;
mod model;
mod module;
mod plan;
mod reconcile;
mod report;
mod rfc3339;
mod secret;
mod tokens;
mod trust;
mod undeclared;

use std::path::Path;
use std::process::ExitCode;

use module::Module;

fn main() -> ExitCode {
    report::print_on_panic();
    let args_path = std::env::args_os().nth(1);
    let (output, code) = match Module::of_args_file(args_path.as_ref().map(Path::new)) {
        Ok(Module::User) => reconcile::run(args_path),
        Ok(Module::RegistrationToken) => tokens::run(args_path),
        Err(message) => (report::Report::fatal(message).printed(), 1),
    };
    println!("{output}");
    ExitCode::from(code as u8)
}
