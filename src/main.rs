//! `matrix_user`: an Ansible binary module that makes Matrix homeserver users
//! match what a playbook declares. Ansible runs it with the path of a JSON
//! args file and reads one JSON object from stdout.

mod args;
mod backend;
mod host_file;
mod http;
mod matrix_id;
mod model;
mod plan;
mod reconcile;
mod report;
mod secret;
mod trust;
mod undeclared;

use std::process::ExitCode;

fn main() -> ExitCode {
    report::print_on_panic();
    let (output, code) = reconcile::run(std::env::args_os().nth(1));
    println!("{output}");
    ExitCode::from(code as u8)
}
