//! The typed field reader of stage 1: one JSON mapping of Ansible's
//! arguments read field by field as a string, path, secret, boolean, choice
//! or bounded integer, with Ansible's spellings (booleans, numbers given as
//! strings) and errors that name the field (`users[3].admin`) and what is
//! accepted, quoting an invalid value only as a short masked prefix.

use crate::model::ArgsErrorKind;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::parameters::parameter;
use super::ArgsError;
use crate::host_file::{self, FileProblem};
use crate::module::MODULE_KEY;
use crate::secret::{excerpt, hold, url_password, Secret};

/// Linux's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;

/// How much of an invalid value a message quotes (a 50 MB value is not echoed).
const MAX_ECHOED_CHARS: usize = 64;

const BOOLEAN_VALUES: &str = "yes/no, true/false, 1/0 or on/off";

/// Typed access to one JSON mapping, with errors that name the field.
pub(super) struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// `""` at the top level, `users[3]` inside the list.
    prefix: String,
    /// What the run should warn about (a secret file others can read).
    warnings: RefCell<Vec<String>>,
}

impl<'a> Fields<'a> {
    pub(super) fn top(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            prefix: String::new(),
            warnings: RefCell::default(),
        }
    }

    /// One entry of a list, named `prefix` (`users[3]`) in messages.
    pub(super) fn nested(map: &'a Map<String, Value>, prefix: String) -> Self {
        Fields {
            map,
            prefix,
            warnings: RefCell::default(),
        }
    }

    /// The fields of `value`, one entry of a list named `field`, which must
    /// be a mapping (`expected` says of what) of only the `known` names.
    pub(super) fn entry(
        value: &'a Value,
        field: String,
        known: &[&str],
        expected: &'static str,
    ) -> Result<Self, ArgsError> {
        let Value::Object(map) = value else {
            return Err(ArgsError::wrong_type(field, expected));
        };
        let fields = Fields::nested(map, field);
        fields.refuse_unknown(known)?;
        Ok(fields)
    }

    /// The warnings reading the fields gave, for the run's result.
    pub(super) fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    /// The raw value of `field`, for a caller that reads a nested structure.
    pub(super) fn value(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    pub(super) fn name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// How to name this user in a message about it as a whole.
    pub(super) fn context(&self) -> String {
        if self.prefix.is_empty() {
            "username".to_string()
        } else {
            self.prefix.clone()
        }
    }

    pub(super) fn has(&self, field: &str) -> bool {
        !matches!(self.map.get(field), None | Some(Value::Null))
    }

    pub(super) fn refuse_unknown(&self, known: &[&str]) -> Result<(), ArgsError> {
        match self.map.keys().find(|key| {
            // Ansible's internal keys, and the module the action plugin ran.
            !key.starts_with("_ansible_")
                && key.as_str() != MODULE_KEY
                && !known.contains(&key.as_str())
        }) {
            Some(key) => Err(ArgsError::at(
                self.name(&echo(key)),
                ArgsErrorKind::UnknownParameter {
                    valid: known.join(", "),
                },
            )),
            None => Ok(()),
        }
    }

    pub(super) fn internal_flag(&self, key: &str) -> bool {
        self.map.get(key).and_then(ansible_boolean).unwrap_or(false)
    }

    pub(super) fn string(&self, field: &str) -> Result<Option<String>, ArgsError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Ansible's templating turns `username: 1234abc`-like values into numbers.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ArgsError::wrong_type(self.name(field), "a string")),
        }
    }

    /// The list `field` holds; `None` when it is left out.
    pub(super) fn list(
        &self,
        field: &str,
        expected: &'static str,
    ) -> Result<Option<&'a Vec<Value>>, ArgsError> {
        match self.value(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(ArgsError::wrong_type(self.name(field), expected)),
        }
    }

    /// A path no longer than Linux's `PATH_MAX`: no longer one can be opened,
    /// and later messages quote the path whole.
    pub(super) fn path(&self, field: &str) -> Result<Option<PathBuf>, ArgsError> {
        match self.string(field)? {
            Some(path) if path.len() > MAX_PATH_BYTES => Err(ArgsError::at(
                self.name(field),
                ArgsErrorKind::NotAccepted {
                    value: echo(&path),
                    accepted: format!("a path of at most {MAX_PATH_BYTES} bytes"),
                },
            )),
            path => Ok(path.map(PathBuf::from)),
        }
    }

    pub(super) fn secret(&self, field: &str) -> Result<Option<Secret>, ArgsError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
            Some(Value::Number(n)) => Ok(Some(Secret::new(n.to_string()))),
            Some(_) => Err(ArgsError::wrong_type(self.name(field), "a string")),
        }
    }

    /// A secret given inline as `field` or in a file as `field_file`.
    pub(super) fn secret_or_file(&self, field: &str) -> Result<Option<Secret>, ArgsError> {
        let file_field = format!("{field}_file");
        let inline = self.secret(field)?;
        let path = self.path(&file_field)?;
        let secret = match (inline, path) {
            (Some(_), Some(_)) => {
                return Err(ArgsError::new(ArgsErrorKind::Exclusive {
                    first: self.name(field),
                    second: self.name(&file_field),
                }))
            }
            (Some(secret), None) => secret,
            (None, Some(path)) => {
                let text = self.read_secret_file(&file_field, &path)?;
                // A database URL's password alone, as a driver may quote it.
                if let Some((start, end)) = url_password(&text) {
                    hold(&text[start..end]);
                }
                Secret::new(text)
            }
            (None, None) => return Ok(None),
        };
        if secret.expose().is_empty() {
            return Err(ArgsError::at(
                self.name(field),
                ArgsErrorKind::BadSecret {
                    problem: "is empty",
                },
            ));
        }
        Ok(Some(secret))
    }

    /// The secret in the file at `path`, less one line ending at its end
    /// (as `echo` and editors leave one; as `docker login --password-stdin`
    /// reads one). Warns when every user of the host may read it, as ssh
    /// does for a private key.
    fn read_secret_file(&self, file_field: &str, path: &Path) -> Result<String, ArgsError> {
        let refused = |problem: FileProblem| {
            ArgsError::at(
                self.name(file_field),
                ArgsErrorKind::SecretFile {
                    path: path.display().to_string(),
                    problem,
                },
            )
        };
        let contents = host_file::read(path, host_file::SECRET, true).map_err(refused)?;
        if contents.readable_by_everyone() {
            self.warnings.borrow_mut().push(format!(
                "{}: {} is readable by every user of the host (mode {:04o}); make it readable \
                 only by its owner (chmod o-r), as for an ssh private key",
                self.name(file_field),
                path.display(),
                contents.mode
            ));
        }
        let mut text = String::from_utf8(contents.bytes).map_err(|_| {
            refused(FileProblem::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it is not UTF-8 text",
            )))
        })?;
        for ending in ["\r\n", "\n"] {
            if text.ends_with(ending) {
                text.truncate(text.len() - ending.len());
                break;
            }
        }
        Ok(text)
    }

    pub(super) fn boolean(&self, field: &str) -> Result<Option<bool>, ArgsError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => ansible_boolean(value).map(Some).ok_or_else(|| {
                ArgsError::at(
                    self.name(field),
                    ArgsErrorKind::NotAccepted {
                        value: echo(&display_value(value)),
                        accepted: BOOLEAN_VALUES.into(),
                    },
                )
            }),
        }
    }

    /// `field`'s value among its choices ([`parameter`]), else its default.
    pub(super) fn choice(&self, field: &str) -> Result<String, ArgsError> {
        let parameter = parameter(field);
        let chosen = self.one_of(field, parameter.choices)?;
        Ok(chosen.unwrap_or_else(|| parameter.default_str().to_string()))
    }

    /// `field`'s value, which must be one of `choices`; `None` when unset.
    pub(super) fn one_of(
        &self,
        field: &str,
        choices: &[&str],
    ) -> Result<Option<String>, ArgsError> {
        match self.string(field)? {
            None => Ok(None),
            Some(value) if choices.contains(&value.as_str()) => Ok(Some(value)),
            Some(value) => Err(ArgsError::at(
                self.name(field),
                ArgsErrorKind::NotAccepted {
                    value: echo(&value),
                    accepted: choices.join(" or "),
                },
            )),
        }
    }

    /// `field` as a boolean, else its default ([`parameter`]).
    pub(super) fn boolean_or_default(&self, field: &str) -> Result<bool, ArgsError> {
        Ok(match self.boolean(field)? {
            Some(value) => value,
            None => parameter(field).default_bool(),
        })
    }

    /// `field` as a whole number from `min` to `max`, else its default ([`parameter`]).
    pub(super) fn integer_or_default(
        &self,
        field: &str,
        min: u64,
        max: u64,
    ) -> Result<u64, ArgsError> {
        Ok(match self.integer(field, min, max)? {
            Some(value) => value,
            None => parameter(field).default_int(),
        })
    }

    pub(super) fn integer(
        &self,
        field: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ArgsError> {
        let value = match self.map.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match value {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ArgsError::at(
                self.name(field),
                ArgsErrorKind::NotAccepted {
                    value: echo(&self.map.get(field).map(display_value).unwrap_or_default()),
                    accepted: format!("a whole number from {min} to {max}"),
                },
            )),
        }
    }
}

/// Ansible's boolean spellings (`module_utils.parsing.convert_bool`).
fn ansible_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An invalid value as a message may quote it: masked, and cut to a short prefix.
pub(super) fn echo(value: &str) -> String {
    excerpt(value, MAX_ECHOED_CHARS)
}

fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
