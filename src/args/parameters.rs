//! The module's parameters, once: name, type, default and choices. The
//! parser takes its list of known and secret parameters, its choices and its
//! defaults from [`PARAMETERS`]; a test holds the module's documentation and
//! the role's argument specs to the same table.

/// The Ansible type of a parameter, as the documentation states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Str,
    Path,
    Bool,
    Int,
    /// A string or a mapping (`ratelimit`).
    Raw,
    /// A list whose elements are of the given Ansible type (`str`, `dict`).
    List(&'static str),
}

/// What a parameter means when it is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Omitted {
    /// Left out means "leave it as it is" or "not used".
    Unset,
    Bool(bool),
    Int(u64),
    Str(&'static str),
    EmptyList,
    /// Computed at run time; the documentation states it in these words.
    Described(&'static str),
}

/// Where a parameter may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Only at the top level: it applies to the whole run.
    Module,
    /// At the top level (one user) or in each entry of `users`.
    User,
}

#[derive(Debug)]
pub(super) struct Parameter {
    pub(super) name: &'static str,
    pub(super) scope: Scope,
    /// Each field's reader checks its type; this is what the documentation
    /// must say, which the test below holds it to.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) kind: Type,
    pub(super) default: Omitted,
    /// The accepted values; empty when any value of the type is.
    pub(super) choices: &'static [&'static str],
    /// Its value is masked in every output.
    pub(super) secret: bool,
}

const fn module(name: &'static str, kind: Type, default: Omitted) -> Parameter {
    Parameter {
        name,
        scope: Scope::Module,
        kind,
        default,
        choices: &[],
        secret: false,
    }
}

const fn user(name: &'static str, kind: Type, default: Omitted) -> Parameter {
    Parameter {
        scope: Scope::User,
        ..module(name, kind, default)
    }
}

const fn secret(parameter: Parameter) -> Parameter {
    Parameter {
        secret: true,
        ..parameter
    }
}

const fn choices(parameter: Parameter, choices: &'static [&'static str]) -> Parameter {
    Parameter {
        choices,
        ..parameter
    }
}

use Omitted::{Described, EmptyList, Int, Str, Unset};
use Type::{Bool, List, Path, Raw};

/// Every parameter the module takes: the module's own, then one user's
/// (the order in which a message lists them).
pub(super) const PARAMETERS: &[Parameter] = &[
    choices(
        module("homeserver", Type::Str, Str("synapse")),
        &["synapse", "dendrite", "mas"],
    ),
    module("homeserver_url", Type::Str, Unset),
    module("server_name", Type::Str, Unset),
    secret(module("registration_shared_secret", Type::Str, Unset)),
    module("registration_shared_secret_file", Path, Unset),
    secret(module("admin_token", Type::Str, Unset)),
    module("admin_token_file", Path, Unset),
    module("service_account", Type::Str, Str("matrix-user-service")),
    module(
        "token_cache_dir",
        Path,
        Described("$XDG_CACHE_HOME/matrix_user, else ~/.cache/matrix_user"),
    ),
    secret(module("dendrite_database", Type::Str, Unset)),
    module("dendrite_database_file", Path, Unset),
    secret(module("synapse_database", Type::Str, Unset)),
    module("synapse_database_file", Path, Unset),
    module("mas_url", Type::Str, Unset),
    module("mas_client_id", Type::Str, Unset),
    secret(module("mas_client_secret", Type::Str, Unset)),
    module("mas_client_secret_file", Path, Unset),
    module("mas_adopt_existing", Bool, Omitted::Bool(false)),
    user("username", Type::Str, Unset),
    secret(user("password", Type::Str, Unset)),
    user("admin", Bool, Unset),
    user("user_type", Type::Str, Unset),
    user("displayname", Type::Str, Unset),
    choices(
        user("state", Type::Str, Str("present")),
        &["present", "absent"],
    ),
    choices(
        user("update_password", Type::Str, Str("on_create")),
        &["on_create", "always"],
    ),
    choices(
        user("update_type", Type::Str, Str("always")),
        &["on_create", "always"],
    ),
    user("erase", Bool, Omitted::Bool(false)),
    user("email", Type::Str, Unset),
    user("locked", Bool, Unset),
    user("suspended", Bool, Unset),
    user("shadow_banned", Bool, Unset),
    user("ratelimit", Raw, Unset),
    user("mas_skip_password_check", Bool, Omitted::Bool(false)),
    user("upstream_links", List("dict"), Unset),
    user("rooms", List("str"), Unset),
    user("emails", List("str"), Unset),
    user("external_ids", List("dict"), Unset),
    user("avatar", Type::Str, Unset),
    user("access_token_file", Path, Unset),
    module("users", List("dict"), Unset),
    choices(
        module("undeclared", Type::Str, Str("keep")),
        &["keep", "lock", "deactivate"],
    ),
    module("undeclared_ignore", List("str"), EmptyList),
    module("undeclared_max", Type::Int, Int(10)),
    module("concurrency", Type::Int, Int(8)),
    module("validate_certs", Bool, Omitted::Bool(true)),
    module("ca_path", Path, Unset),
    module("timeout", Type::Int, Int(30)),
    module("wait_timeout", Type::Int, Int(60)),
];

/// The parameters given where `scope` says.
pub(super) fn names(scope: Scope) -> impl Iterator<Item = &'static str> {
    PARAMETERS
        .iter()
        .filter(move |p| p.scope == scope)
        .map(|p| p.name)
}

/// Every parameter the top level takes: the module's, then one user's.
pub(super) fn top_level_names() -> Vec<&'static str> {
    names(Scope::Module).chain(names(Scope::User)).collect()
}

/// The parameters whose values are secrets.
pub(super) fn secret_names() -> impl Iterator<Item = &'static str> {
    PARAMETERS.iter().filter(|p| p.secret).map(|p| p.name)
}

/// The parameter `name`; only the parser's own names are asked for, and a
/// unit test reads each, so a miss is a programming error.
pub(super) fn parameter(name: &str) -> &'static Parameter {
    PARAMETERS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not in args::parameters::PARAMETERS"))
}

impl Parameter {
    /// The default of a boolean parameter that has one.
    pub(super) fn default_bool(&self) -> bool {
        match self.default {
            Omitted::Bool(value) => value,
            _ => panic!("{} has no boolean default", self.name),
        }
    }

    /// The default of an integer parameter that has one.
    pub(super) fn default_int(&self) -> u64 {
        match self.default {
            Int(value) => value,
            _ => panic!("{} has no integer default", self.name),
        }
    }

    /// The default of a string parameter that has one.
    pub(super) fn default_str(&self) -> &'static str {
        match self.default {
            Str(value) => value,
            _ => panic!("{} has no string default", self.name),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Reads a module's documentation (the module named in the second
    /// argument), the role's argument specs and the options the role's
    /// tasks pass to matrix_user, as JSON, with the
    /// project's own .venv. Ansible's own reader (`get_docstring`, as
    /// ansible-doc uses it) reads the documentation, so the options of the
    /// doc fragments it extends are merged in as Ansible merges them.
    const READ_DOCS: &str = r#"
import glob, json, re, sys, yaml
from ansible.plugins.loader import fragment_loader, init_plugin_loader
from ansible.utils.plugin_docs import get_docstring
root = sys.argv[1]
init_plugin_loader([f"{root}/collections"])
doc = get_docstring(f"{root}/collection/plugins/modules/{sys.argv[2]}.py", fragment_loader,
                    collection_name="matrix_user.matrix", is_module=True)[0]
specs = yaml.safe_load(open(f"{root}/roles/matrix_user/meta/argument_specs.yml"))
specs = specs["argument_specs"]["main"]["options"]
mapping = []
def walk(node):
    if isinstance(node, dict):
        call = node.get("matrix_user.matrix.matrix_user")
        if isinstance(call, dict):
            for option, value in call.items():
                passed = re.match(r"\{\{\s*(\w+)", str(value))
                if passed and passed.group(1) in specs:
                    mapping.append([option, passed.group(1)])
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
for path in sorted(glob.glob(f"{root}/roles/matrix_user/tasks/*.yml")):
    walk(yaml.safe_load(open(path)))
print(json.dumps({"options": doc["options"], "specs": specs, "mapping": mapping}))
"#;

    /// The per-user options the role's `matrix_user_users` leaves out: it
    /// sets `update_type` itself, for mdad's lists only.
    const ROLE_USERS_LEAVE_OUT: &[&str] = &["update_type"];

    /// [`READ_DOCS`] for the module `module` (`matrix_user`, `matrix_registration_token`).
    pub(in crate::args) fn read_docs(module: &str) -> Value {
        let root = env!("CARGO_MANIFEST_DIR");
        let python = format!("{root}/.venv/bin/python");
        let output = std::process::Command::new(&python)
            .args(["-c", READ_DOCS, root, module])
            .output()
            .unwrap_or_else(|e| panic!("{python}: {e}; run tools/bootstrap"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The documentation's `type`, `elements`, `default` and `choices` of `parameter`.
    pub(in crate::args) fn documented(parameter: &Parameter) -> Value {
        let (kind, elements) = match parameter.kind {
            Type::Str => ("str", None),
            Type::Path => ("path", None),
            Type::Bool => ("bool", None),
            Type::Int => ("int", None),
            Type::Raw => ("raw", None),
            Type::List(elements) => ("list", Some(elements)),
        };
        let default = match parameter.default {
            Unset => Value::Null,
            Omitted::Bool(value) => json!(value),
            Int(value) => json!(value),
            Str(value) | Described(value) => json!(value),
            EmptyList => json!([]),
        };
        let choices = match parameter.choices {
            [] => Value::Null,
            choices => json!(choices),
        };
        json!({"type": kind, "elements": elements, "default": default, "choices": choices})
    }

    /// The parser maps a choice to the model's value by its name.
    #[test]
    fn undeclared_choices_are_the_models_actions() {
        let names = crate::model::Undeclared::ALL.map(crate::model::Undeclared::name);
        assert_eq!(parameter("undeclared").choices, names);
    }

    /// `documented` as a role declares the variable it passes on: a role
    /// has no `path` type (the module checks the path), so it says `str`.
    fn as_role_variable(mut documented: Value) -> Value {
        if documented["type"] == "path" {
            documented["type"] = json!("str");
        }
        documented
    }

    /// `option`'s `type`, `elements`, `default` and `choices` as a YAML spec gives them.
    pub(in crate::args) fn specified(option: &Value) -> Value {
        let field = |name: &str| option.get(name).cloned().unwrap_or(Value::Null);
        json!({"type": field("type"), "elements": field("elements"),
            "default": field("default"), "choices": field("choices")})
    }

    /// What is compared with [`PARAMETERS`], each disagreement one line:
    ///
    /// - the module's documentation (DOCUMENTATION in
    ///   collection/plugins/modules/matrix_user.py, with the doc fragments
    ///   of collection/plugins/doc_fragments/ it extends): the same option names at
    ///   the top level, and `users`' suboptions are exactly the per-user
    ///   parameters; for each, the same `type`, `elements`, `default` and
    ///   `choices` (absent there is no default / no choices here);
    /// - the role (roles/matrix_user/meta/argument_specs.yml), for each
    ///   option its tasks pass straight from a declared variable
    ///   (`option: "{{ variable ..."`): the same `choices` and `elements`, the
    ///   same `type` (a role passes a `path` as `str`), `no_log` exactly
    ///   when the parameter is secret, and a default that is the module's
    ///   or `""`/none (the tasks then leave the option out); and
    ///   `matrix_user_users`' options are the per-user parameters but
    ///   [`ROLE_USERS_LEAVE_OUT`], with the same `type`, `elements`,
    ///   `default`, `choices`.
    #[test]
    fn documentation_and_role_agree_with_the_parameters() {
        let docs = read_docs("matrix_user");
        let mut disagreements: Vec<String> = Vec::new();
        let mut compare = |what: String, ours: Value, theirs: Value| {
            if ours != theirs {
                disagreements.push(format!("{what}: here {ours}, there {theirs}"));
            }
        };
        let options = docs["options"].as_object().unwrap();
        let mut all: Vec<&str> = PARAMETERS.iter().map(|p| p.name).collect();
        let mut documented_names: Vec<&str> = options.keys().map(String::as_str).collect();
        all.sort();
        documented_names.sort();
        compare("module options".into(), json!(all), json!(documented_names));
        let suboptions = docs["options"]["users"]["suboptions"].as_object().unwrap();
        let mut user_names: Vec<&str> = names(Scope::User).collect();
        let mut documented_user_names: Vec<&str> = suboptions.keys().map(String::as_str).collect();
        user_names.sort();
        documented_user_names.sort();
        compare(
            "users' suboptions".into(),
            json!(user_names),
            json!(documented_user_names),
        );
        for parameter in PARAMETERS {
            let name = parameter.name;
            if let Some(option) = options.get(name) {
                compare(
                    format!("option {name}"),
                    documented(parameter),
                    specified(option),
                );
            }
            if let Some(option) = suboptions.get(name) {
                compare(
                    format!("users[].{name}"),
                    documented(parameter),
                    specified(option),
                );
            }
        }

        let specs = &docs["specs"];
        for pair in docs["mapping"].as_array().unwrap() {
            let (option, variable) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
            let parameter = parameter(option);
            let spec = &specs[variable];
            let ours = as_role_variable(documented(parameter));
            let mut theirs = specified(spec);
            if matches!(theirs["default"].as_str(), Some("")) || theirs["default"].is_null() {
                theirs["default"] = ours["default"].clone();
            }
            let what = format!("role variable {variable} (option {option})");
            compare(what.clone(), ours, theirs);
            let no_log = spec.get("no_log").and_then(Value::as_bool).unwrap_or(false);
            compare(
                format!("{what} no_log"),
                json!(parameter.secret),
                json!(no_log),
            );
        }
        let role_users = specs["matrix_user_users"]["options"].as_object().unwrap();
        let mut expected: Vec<&str> = names(Scope::User)
            .filter(|name| !ROLE_USERS_LEAVE_OUT.contains(name))
            .collect();
        let mut declared: Vec<&str> = role_users.keys().map(String::as_str).collect();
        expected.sort();
        declared.sort();
        compare(
            "matrix_user_users' options".into(),
            json!(expected),
            json!(declared),
        );
        for (name, option) in role_users {
            if let Some(parameter) = PARAMETERS.iter().find(|p| p.name == name) {
                compare(
                    format!("matrix_user_users[].{name}"),
                    as_role_variable(documented(parameter)),
                    specified(option),
                );
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }
}
