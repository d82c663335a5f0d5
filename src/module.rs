//! Which module of this binary an args file is for. The collection's action
//! plugins each set the reserved argument [`MODULE_KEY`] (Ansible's own
//! `_ansible_module_name` names the binary, not the task's module); an args
//! file without it is `matrix_user`'s, so older args files and direct runs
//! keep working.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::value::RawValue;

/// The argument the action plugins set to the module's name.
pub const MODULE_KEY: &str = "_matrix_user_module";

/// The modules this binary serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    User,
    RegistrationToken,
}

impl Module {
    const ALL: [Module; 2] = [Module::User, Module::RegistrationToken];

    pub fn name(self) -> &'static str {
        match self {
            Module::User => "matrix_user",
            Module::RegistrationToken => "matrix_registration_token",
        }
    }

    /// The module the args file at `path` is for. A file that cannot be read
    /// or is no JSON object is `matrix_user`'s, whose parser says what is
    /// wrong with it.
    pub fn of_args_file(path: Option<&Path>) -> Result<Module, String> {
        match path.and_then(|path| std::fs::read_to_string(path).ok()) {
            Some(text) => Module::of_args(&text),
            None => Ok(Module::User),
        }
    }

    fn of_args(text: &str) -> Result<Module, String> {
        let Ok(fields) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(text) else {
            return Ok(Module::User);
        };
        let Some(raw) = fields.get(MODULE_KEY) else {
            return Ok(Module::User);
        };
        let names: Vec<&str> = Module::ALL.iter().map(|m| m.name()).collect();
        let named = serde_json::from_str::<&str>(raw.get())
            .ok()
            .and_then(|name| Module::ALL.into_iter().find(|m| m.name() == name));
        named.ok_or_else(|| {
            format!(
                "{MODULE_KEY}: not a module of this binary; it is set by the collection's action plugins to one of {}",
                names.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_args_file_without_the_key_is_matrix_users() {
        assert_eq!(
            Module::of_args(r#"{"username": "alice"}"#),
            Ok(Module::User)
        );
        assert_eq!(Module::of_args("not json"), Ok(Module::User));
        assert_eq!(Module::of_args("[1]"), Ok(Module::User));
        assert_eq!(Module::of_args_file(None), Ok(Module::User));
    }

    #[test]
    fn the_key_names_the_module() {
        let args = |name: &str| format!(r#"{{"{MODULE_KEY}": "{name}", "token": "x"}}"#);
        assert_eq!(Module::of_args(&args("matrix_user")), Ok(Module::User));
        assert_eq!(
            Module::of_args(&args("matrix_registration_token")),
            Ok(Module::RegistrationToken)
        );
    }

    #[test]
    fn an_unknown_module_is_refused_naming_the_key_and_the_modules() {
        let error = Module::of_args(r#"{"_matrix_user_module": "matrix_room"}"#).unwrap_err();
        assert!(
            error.starts_with("_matrix_user_module: not a module"),
            "{error}"
        );
        assert!(
            error.contains("matrix_user, matrix_registration_token"),
            "{error}"
        );
        assert!(Module::of_args(r#"{"_matrix_user_module": 3}"#).is_err());
    }
}
