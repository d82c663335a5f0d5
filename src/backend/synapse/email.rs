//! E-mail addresses in the form Synapse keeps them (`canonicalise_email` in
//! synapse/util/threepids.py): the local part case folded (Python's
//! `str.casefold`: full Unicode case folding, so `ß` is `ss` and a capital
//! sigma `σ` wherever it stands) and the domain lowercased (`str.lower`).
//! Synapse stores that form, and its lookup by address finds only that form.

/// Capital letters whose case mapping Unicode added after 13.0, the version
/// of the oldest Python Synapse runs on (3.10): Synapse keeps them as given
/// on an older Python and folds them on a newer one, so the form it stores
/// depends on the Python behind it. Unicode 14.0 (Python 3.11): Glagolitic
/// U+2C2F, Latin U+A7C0, U+A7D0, U+A7D6, U+A7D8, Vithkuqi; 16.0 (Python
/// 3.14): Cyrillic U+1C89, Latin U+A7CB, U+A7CC, U+A7DA, U+A7DC, Garay;
/// 17.0: Latin U+A7CE, U+A7D2, U+A7D4, Beria Erfe.
const CASED_SINCE_UNICODE_13: &[(char, char)] = &[
    ('\u{1c89}', '\u{1c89}'),
    ('\u{2c2f}', '\u{2c2f}'),
    ('\u{a7c0}', '\u{a7c0}'),
    ('\u{a7cb}', '\u{a7cc}'),
    ('\u{a7ce}', '\u{a7ce}'),
    ('\u{a7d0}', '\u{a7d0}'),
    ('\u{a7d2}', '\u{a7d2}'),
    ('\u{a7d4}', '\u{a7d4}'),
    ('\u{a7d6}', '\u{a7d6}'),
    ('\u{a7d8}', '\u{a7d8}'),
    ('\u{a7da}', '\u{a7da}'),
    ('\u{a7dc}', '\u{a7dc}'),
    ('\u{10570}', '\u{10595}'),
    ('\u{10d50}', '\u{10d65}'),
    ('\u{16ea0}', '\u{16eb8}'),
];

/// `address` (one `@`, as the arguments check) as Synapse stores it, or
/// what to declare instead when that depends on the Python Synapse runs on.
pub fn canonical(address: &str) -> Result<String, String> {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let version_dependent = address.chars().find(|c| {
        CASED_SINCE_UNICODE_13
            .iter()
            .any(|&(low, high)| (low..=high).contains(c))
    });
    if domain.contains('Σ') {
        // Python's lower() makes it σ or a word-final ς by the letters
        // around it, by the rules of the Unicode version of its Python.
        return Err(
            "the domain in lower case: Synapse lowercases a capital Σ to σ or ς by \
             what surrounds it, which depends on the Python it runs on"
                .to_string(),
        );
    }
    if let Some(c) = version_dependent {
        return Err(format!(
            "the address in lower case: Synapse keeps {c} (U+{:04X}) as given or case folds it \
             depending on the Python it runs on",
            u32::from(c)
        ));
    }
    Ok(format!(
        "{}@{}",
        caseless::default_case_fold_str(local),
        domain.to_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::address_chars::address_char;
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::{Mutex, OnceLock};

    /// Synapse's own `canonicalise_email`, run by the project's Python (the
    /// one the test Synapse runs on): a JSON list of addresses a line, their
    /// folded forms back (`None` where it raises).
    struct SynapseFolding {
        input: ChildStdin,
        output: BufReader<ChildStdout>,
        /// Ends with the test process, when its input closes.
        _python: Child,
    }

    const SYNAPSE_FOLDING: &str = "
import json, sys
from synapse.util.threepids import canonicalise_email
def fold(address):
    try:
        return canonicalise_email(address)
    except ValueError:
        return None
for line in sys.stdin:
    print(json.dumps([fold(a) for a in json.loads(line)]), flush=True)
";

    impl SynapseFolding {
        fn shared() -> &'static Mutex<SynapseFolding> {
            static FOLDING: OnceLock<Mutex<SynapseFolding>> = OnceLock::new();
            FOLDING.get_or_init(|| {
                let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
                let mut child = Command::new(python)
                    .args(["-c", SYNAPSE_FOLDING])
                    .current_dir(std::env::temp_dir())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("the project's .venv (tools/bootstrap) has Synapse");
                Mutex::new(SynapseFolding {
                    input: child.stdin.take().unwrap(),
                    output: BufReader::new(child.stdout.take().unwrap()),
                    _python: child,
                })
            })
        }

        fn canonical(&mut self, addresses: &[String]) -> Vec<Option<String>> {
            writeln!(self.input, "{}", serde_json::to_string(addresses).unwrap()).unwrap();
            let mut line = String::new();
            self.output.read_line(&mut line).unwrap();
            serde_json::from_str(&line).expect("Synapse's folding answered")
        }
    }

    fn synapse_canonical(addresses: &[String]) -> Vec<Option<String>> {
        SynapseFolding::shared()
            .lock()
            .unwrap()
            .canonical(addresses)
    }

    fn is_version_dependent(text: &str) -> bool {
        text.chars().any(|c| {
            CASED_SINCE_UNICODE_13
                .iter()
                .any(|&(low, high)| (low..=high).contains(&c))
        })
    }

    /// [`address_char`], with Cyrillic extended, Latin extended-D, Vithkuqi
    /// (cased since Unicode 14, refused) and the small sigma.
    fn synapse_address_char() -> impl Strategy<Value = char> {
        address_char(prop_oneof![
            proptest::char::range('\u{1c80}', '\u{1cbf}'),
            proptest::char::range('\u{a640}', '\u{a7ff}'),
            proptest::char::range('\u{10570}', '\u{105bf}'),
            Just('σ'),
        ])
    }

    fn part() -> impl Strategy<Value = String> {
        proptest::collection::vec(synapse_address_char(), 1..12)
            .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any address is folded exactly as Synapse's own canonicalise_email
        /// folds it, but for the few letters whose folding depends on the
        /// Python version, which are refused.
        #[test]
        fn addresses_fold_as_synapse_folds_them(local in part(), domain in part()) {
            let address = format!("{local}@{domain}");
            match canonical(&address) {
                Ok(folded) => prop_assert_eq!(vec![Some(folded)], synapse_canonical(&[address])),
                Err(reason) => prop_assert!(
                    is_version_dependent(&address) || domain.contains('Σ'),
                    "{}",
                    reason
                ),
            }
        }
    }

    /// Every character alone, in the local part and in the domain, but
    /// spaces and control characters, which the arguments refuse (Python's
    /// `strip` takes U+001C to U+001F for spaces too).
    #[test]
    fn every_character_folds_as_synapse_folds_it() {
        let addresses: Vec<String> = (0..=0x10ffff_u32)
            .filter_map(char::from_u32)
            .filter(|c| *c != '@' && !c.is_whitespace() && !c.is_control())
            .filter(|c| !is_version_dependent(&c.to_string()) && *c != 'Σ')
            .flat_map(|c| [format!("{c}@x"), format!("x@{c}")])
            .collect();
        let differing: Vec<_> = addresses
            .iter()
            .zip(synapse_canonical(&addresses))
            .filter(|(address, theirs)| canonical(address).ok() != *theirs)
            .collect();
        assert!(differing.is_empty(), "{differing:?}");
    }

    #[test]
    fn the_reported_addresses_fold_to_what_synapse_stores() {
        assert_eq!(
            canonical("ΟΔΥΣΣΕΑΣ@example.gr").unwrap(),
            "οδυσσεασ@example.gr"
        );
        assert_eq!(canonical("ΝΙΚΟΣ@Example.GR").unwrap(), "νικοσ@example.gr");
        assert_eq!(canonical("Straße@ΕΛΛΆΔΑ.gr").unwrap(), "strasse@ελλάδα.gr");
        let refused = canonical("x@ΕΛΛΑΣ.gr").unwrap_err();
        assert!(refused.starts_with("the domain in lower case"), "{refused}");
        let refused = canonical("\u{10570}@example.com").unwrap_err();
        assert!(refused.contains("U+10570"), "{refused}");
    }
}
