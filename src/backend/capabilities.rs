//! What each server can manage: one table a backend ([`Capabilities`]),
//! from which its refusals come. A declared option that the chosen server
//! does not support is refused by name, with the table's reason, before
//! anything is sent. A test holds the README's support matrix to these
//! tables.

use super::declaration::DeclarationError;
use crate::model::{DesiredUser, ModuleArgs, Restriction, Undeclared, UserState, UserType};

/// How far a server supports one declarable option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Managed: compared, and changed where it differs.
    Yes,
    /// Managed within limits, which `note` states as the README's matrix
    /// shows them (e.g. only through a database, found out once connected).
    Limited { note: &'static str },
    /// Managed from this version of the server on (the oldest its project
    /// gives the feature in), checked once connected; `note`, when given,
    /// states further limits as the README's matrix shows them.
    Since {
        version: &'static str,
        note: Option<&'static str>,
    },
    /// Refused by name before anything is sent: `reason` says why and what
    /// to declare instead.
    No { reason: &'static str },
}

/// Every option a declaration may ask of a server, with this server's
/// support: a backend states each, so that a new option is weighed for
/// every server.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Creating a user with its `password`, and changing the password.
    pub create: Support,
    pub admin: Support,
    /// `state: absent` (deactivation), and reactivation.
    pub deactivation: Support,
    pub erase: Support,
    /// A `user_type` other than `regular`.
    pub user_type: Support,
    pub displayname: Support,
    pub locked: Support,
    pub suspended: Support,
    pub shadow_banned: Support,
    pub ratelimit: Support,
    pub rooms: Support,
    pub external_ids: Support,
    pub emails: Support,
    pub email: Support,
    pub upstream_links: Support,
    pub mas_skip_password_check: Support,
    pub mas_adopt_existing: Support,
    pub access_token_file: Support,
    pub avatar: Support,
    /// `undeclared: lock` or `deactivate`.
    pub undeclared: Support,
    pub synapse_database: Support,
}

impl Capabilities {
    /// Every option by the name the README's matrix gives it, with its support.
    #[cfg(test)]
    pub fn options(&self) -> [(&'static str, Support); 21] {
        [
            ("password", self.create),
            ("admin", self.admin),
            ("state: absent", self.deactivation),
            ("erase", self.erase),
            ("user_type", self.user_type),
            ("displayname", self.displayname),
            ("locked", self.locked),
            ("suspended", self.suspended),
            ("shadow_banned", self.shadow_banned),
            ("ratelimit", self.ratelimit),
            ("rooms", self.rooms),
            ("external_ids", self.external_ids),
            ("emails", self.emails),
            ("email", self.email),
            ("upstream_links", self.upstream_links),
            ("mas_skip_password_check", self.mas_skip_password_check),
            ("mas_adopt_existing", self.mas_adopt_existing),
            ("access_token_file", self.access_token_file),
            ("avatar", self.avatar),
            ("undeclared: lock \\| deactivate", self.undeclared),
            ("synapse_database", self.synapse_database),
        ]
    }

    /// Refuses the first option `args` declares that this server does not
    /// support: each user's, in the order of [`Capabilities::declared_by`],
    /// then the run's.
    pub fn refuse_unsupported(&self, args: &ModuleArgs) -> Result<(), DeclarationError> {
        for user in &args.users {
            self.declared_by(user).into_iter().try_for_each(refuse)?;
        }
        let run = [
            (
                self.mas_adopt_existing,
                args.mas_adopt_existing,
                "mas_adopt_existing",
            ),
            (
                self.synapse_database,
                args.credentials.synapse_database.is_some(),
                "synapse_database",
            ),
            (
                self.undeclared,
                args.undeclared.action != Undeclared::Keep,
                "undeclared",
            ),
        ];
        run.into_iter()
            .map(|(support, declared, field)| (support, declared.then(|| field.to_string())))
            .try_for_each(refuse)
    }

    /// Each option of `user`'s, with the field that declares it when it does.
    fn declared_by(&self, user: &DesiredUser) -> [(Support, Option<String>); 18] {
        let declared = |yes: bool, field: &str| yes.then(|| user.field_name(field));
        let restriction = |r: Restriction| declared(user.restrictions.get(r).is_some(), r.field());
        let special_type = user
            .user_type
            .as_ref()
            .is_some_and(|t| *t != UserType::Regular);
        let mas = &user.login;
        [
            (
                self.access_token_file,
                declared(user.access_token_file.is_some(), "access_token_file"),
            ),
            (
                self.mas_skip_password_check,
                declared(mas.skip_password_check, "mas_skip_password_check"),
            ),
            (
                self.upstream_links,
                declared(mas.upstream_links.is_some(), "upstream_links"),
            ),
            (self.email, declared(user.email.is_some(), "email")),
            (self.admin, declared(user.admin.is_some(), "admin")),
            (
                self.deactivation,
                declared(user.state == UserState::Absent, "state"),
            ),
            (
                self.displayname,
                declared(user.displayname.is_some(), "displayname"),
            ),
            (self.user_type, declared(special_type, "user_type")),
            (self.erase, declared(user.erase, "erase")),
            (self.locked, restriction(Restriction::Locked)),
            (self.suspended, restriction(Restriction::Suspended)),
            (self.shadow_banned, restriction(Restriction::ShadowBanned)),
            (
                self.ratelimit,
                declared(user.ratelimit.is_some(), "ratelimit"),
            ),
            (self.rooms, declared(!user.rooms.is_empty(), "rooms")),
            (self.emails, declared(user.emails.is_some(), "emails")),
            (
                self.external_ids,
                declared(user.external_ids.is_some(), "external_ids"),
            ),
            (self.avatar, declared(user.avatar.is_some(), "avatar")),
            (self.create, None),
        ]
    }
}

/// The refusal of `field`, when it is declared and not supported.
fn refuse((support, field): (Support, Option<String>)) -> Result<(), DeclarationError> {
    match (support, field) {
        (Support::No { reason }, Some(field)) => Err(DeclarationError::unsupported(field, reason)),
        _ => Ok(()),
    }
}

impl Support {
    /// This support as a cell of the README's matrix, in `server`'s column.
    #[cfg(test)]
    pub fn cell(self, server: &str) -> String {
        match self {
            Support::Yes => "yes".into(),
            Support::Limited { note } => note.into(),
            Support::Since {
                note: Some(note), ..
            } => note.into(),
            Support::Since {
                version,
                note: None,
            } => format!("{server} {version} or later"),
            Support::No { .. } => "no".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::dendrite::Dendrite;
    use crate::backend::mas::Mas;
    use crate::backend::synapse::Synapse;
    use crate::backend::AccountServer;

    /// Each server's table, under the name the README's matrix heads its column with.
    const SERVERS: [(&str, Capabilities); 3] = [
        ("Synapse", Synapse::CAPABILITIES),
        ("Dendrite", Dendrite::CAPABILITIES),
        ("MAS", Mas::CAPABILITIES),
    ];

    /// A Markdown table row's cells, split at the `|` that are not escaped.
    fn cells(line: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let mut escaped = false;
        for c in line.trim().trim_matches('|').chars() {
            match c {
                '|' if !escaped => cells.push(String::new()),
                _ => cells.last_mut().unwrap().push(c),
            }
            escaped = c == '\\';
        }
        cells.iter().map(|cell| cell.trim().to_string()).collect()
    }

    /// The rows of the README's support matrix, each as its cells.
    fn readme_matrix() -> Vec<Vec<String>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let mut lines = readme.lines().skip_while(|l| !l.starts_with("| option |"));
        let header = cells(lines.next().expect("README.md has a support matrix"));
        let servers: Vec<&str> = SERVERS.iter().map(|(server, _)| *server).collect();
        assert_eq!(header[1..], servers, "the matrix's columns");
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(cells)
            .collect()
    }

    /// Where the README's matrix and the tables disagree.
    fn disagreements(matrix: &[Vec<String>]) -> Vec<String> {
        let names: Vec<&str> = SERVERS[0].1.options().map(|(name, _)| name).to_vec();
        let mut problems = Vec::new();
        let mut shown = Vec::new();
        for row in matrix {
            // The options a row is about: the backticked terms of its first
            // cell that name one (others are values or explanations).
            let options: Vec<&str> = row[0]
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|term| names.iter().find(|name| **name == term).copied())
                .collect();
            if options.is_empty() {
                problems.push(format!(
                    "the README's row {:?} names no option of the tables",
                    row[0]
                ));
            }
            for option in options {
                shown.push(option);
                for (column, (server, table)) in SERVERS.iter().enumerate() {
                    let support = table
                        .options()
                        .into_iter()
                        .find(|(name, _)| *name == option);
                    let expected = support.unwrap().1.cell(server);
                    let cell = row.get(column + 1).map_or("", String::as_str);
                    if cell != expected {
                        problems.push(format!(
                            "{option} on {server}: the README says {cell:?}, the table {expected:?}"
                        ));
                    }
                }
            }
        }
        for name in names.into_iter().filter(|name| !shown.contains(name)) {
            problems.push(format!(
                "{name}: in the tables, but the README's matrix has no row for it"
            ));
        }
        problems
    }

    #[test]
    fn the_readmes_support_matrix_is_the_capability_tables() {
        let problems = disagreements(&readme_matrix());
        assert!(
            problems.is_empty(),
            "README.md's support matrix:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn a_matrix_that_differs_from_the_tables_is_found_out() {
        let mut matrix = readme_matrix();
        matrix[0][3] = "no".into();
        matrix.push(vec![
            "`nothing`".into(),
            "yes".into(),
            "no".into(),
            "no".into(),
        ]);
        matrix.retain(|row| !row[0].contains("`synapse_database`"));
        let problems = disagreements(&matrix);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].ends_with("on MAS: the README says \"no\", the table \"yes\""));
        assert!(problems[1].contains("\"`nothing`\" names no option"));
        assert!(problems[2].starts_with("synapse_database: in the tables, but"));
    }

    #[test]
    fn a_version_in_a_note_is_the_tables_version() {
        for (server, table) in SERVERS {
            for (name, support) in table.options() {
                if let Support::Since {
                    version,
                    note: Some(note),
                } = support
                {
                    let since = format!("{server} {version} or later");
                    assert!(
                        note.contains(&since),
                        "{name} on {server}: {note:?} lacks {since:?}"
                    );
                }
            }
        }
    }
}
