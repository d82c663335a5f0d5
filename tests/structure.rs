//! The shape of the repository, checked by reading its files (no server, no
//! module run): CONTRIBUTING.md's layout table matches the tree; no circle
//! among src/'s top-level modules; no file of src/ over 700 lines before its
//! unit tests; the argument parser names no server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file below `folder`, as paths relative to the repository's root.
fn files_below(folder: &str) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, into: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, into);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                into.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join(folder), &repo_root(), &mut files);
    files.sort();
    files
}

/// The folders at the repository's root that git keeps: not `.git`, nor
/// what the root `.gitignore` names from the root (`/target`, `/.venv`...).
fn top_level_folders() -> Vec<String> {
    let ignored: BTreeSet<String> = read(&repo_root().join(".gitignore"))
        .lines()
        .filter_map(|line| line.strip_prefix('/'))
        .map(|name| name.trim_end_matches('/').to_string())
        .collect();
    let mut folders: Vec<String> = std::fs::read_dir(repo_root())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != ".git" && !ignored.contains(name))
        .collect();
    folders.sort();
    folders
}

/// The rows of the table under `## Layout` in CONTRIBUTING.md.
fn layout_rows() -> Vec<String> {
    let contributing = read(&repo_root().join("CONTRIBUTING.md"));
    let section = contributing
        .split("\n## Layout\n")
        .nth(1)
        .expect("CONTRIBUTING.md has a section `## Layout`");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|line| {
            line.starts_with("| ") && !line.starts_with("| path") && !line.starts_with("|---")
        })
        .map(str::to_string)
        .collect()
}

/// The paths a row names: every `code` span of its first cell, and, in its
/// other cells, every `code` span that starts with a folder at the root and
/// has no space, and every link target (`[docs](docs/x.md)`).
fn paths_named(row: &str, top_level: &[String]) -> Vec<String> {
    let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
    let mut named = Vec::new();
    for (index, cell) in cells.iter().enumerate() {
        for span in cell.split('`').skip(1).step_by(2) {
            let rooted = top_level
                .iter()
                .any(|folder| span.starts_with(&format!("{folder}/")));
            if index == 0 || (rooted && !span.contains(' ')) {
                named.push(span.to_string());
            }
        }
        for link in cell.split("](").skip(1) {
            named.push(link.split(')').next().unwrap().to_string());
        }
    }
    named
}

/// Every path the layout table names exists; every file under src/ and
/// every folder at the root is named by some row.
#[test]
fn the_layout_table_matches_the_tree() {
    let top_level = top_level_folders();
    let named: Vec<String> = layout_rows()
        .iter()
        .flat_map(|row| paths_named(row, &top_level))
        .collect();
    assert!(!named.is_empty(), "no path found in the layout table");

    let missing: Vec<&String> = named
        .iter()
        .filter(|path| !repo_root().join(path.as_str()).exists())
        .collect();
    let unnamed_files: Vec<String> = files_below("src")
        .into_iter()
        .filter(|file| !named.contains(file))
        .collect();
    let unnamed_folders: Vec<&String> = top_level
        .iter()
        .filter(|folder| {
            !named
                .iter()
                .any(|path| path == *folder || path.starts_with(&format!("{folder}/")))
        })
        .collect();
    assert!(
        missing.is_empty() && unnamed_files.is_empty() && unnamed_folders.is_empty(),
        "CONTRIBUTING.md's layout table and the tree disagree:\n\
         named in the table but not in the tree: {missing:?}\n\
         files under src/ no row names: {unnamed_files:?}\n\
         folders at the root no row names: {unnamed_folders:?}"
    );
}

/// The text of a file of src/ before its unit tests: the lines before the
/// first `#[cfg(test)]` at the start of a line (as
/// ../shared/tools/structure-report counts them).
fn before_unit_tests(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .collect()
}

/// The top-level module of a file of src/: `src/http.rs` and
/// `src/backend/mas/oauth.rs` belong to `http` and `backend`.
fn top_level_module(file: &str) -> String {
    let inside = file.strip_prefix("src/").unwrap();
    let first = inside.split('/').next().unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a text refers to as `crate::x` (in code, in
/// `use crate::{x, y::z}` and in doc links alike).
fn crate_references(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for after in text.split("crate::").skip(1) {
        if let Some(group) = after.strip_prefix('{') {
            // The top-level names of a `crate::{...}` group, at depth 1.
            let mut depth = 1;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if start && depth == 1 && !c.is_whitespace() => {
                        start = false;
                        found.insert(ident(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(after));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// No circle among src/'s top-level modules: which refers to which through
/// `crate::x` (doc links included) in the code before the unit tests; a
/// module's own files (a folder's parent and children) do not count.
#[test]
fn no_circle_among_the_top_level_modules() {
    let mut edges: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in files_below("src").iter().filter(|f| f.ends_with(".rs")) {
        let from = top_level_module(file);
        let text = read(&repo_root().join(file));
        let code = before_unit_tests(&text).join("\n");
        for to in crate_references(&code) {
            if to != from && to != "main" {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        module: &str,
        edges: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_string());
            circles.push(circle.join(" -> "));
            return;
        }
        if !done.insert(module.to_string()) {
            return;
        }
        path.push(module.to_string());
        for next in edges.get(module).into_iter().flatten() {
            visit(next, edges, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "circles in the import graph of src/'s top-level modules (crate::x references):\n  {}\nthe graph: {edges:#?}",
        circles.join("\n  ")
    );
}

/// How many lines of code a file of src/ may hold before its unit tests.
const MAX_LINES_BEFORE_TESTS: usize = 700;

#[test]
fn no_file_of_src_is_over_700_lines_before_its_unit_tests() {
    let over: Vec<String> = files_below("src")
        .into_iter()
        .filter(|file| file.ends_with(".rs"))
        .filter_map(|file| {
            let lines = before_unit_tests(&read(&repo_root().join(&file))).len();
            (lines > MAX_LINES_BEFORE_TESTS).then(|| format!("{file}: {lines} lines"))
        })
        .collect();
    assert!(
        over.is_empty(),
        "files of src/ over {MAX_LINES_BEFORE_TESTS} lines before #[cfg(test)]:\n  {}",
        over.join("\n  ")
    );
}

/// The argument parser (src/args.rs, src/args/*.rs) names no server: no
/// `HomeserverKind::`, no `Mas…`/`Dendrite…`/`Synapse…` type and no server's
/// name as a word, outside comments (the pattern of
/// ../shared/tools/structure-report; parameter names such as
/// `mas_client_id` do not match it).
#[test]
fn the_argument_parser_names_no_server() {
    let pattern = regex::Regex::new(
        r"HomeserverKind::|Mas[A-Z][a-z]|Dendrite[A-Z][a-z]|Synapse[A-Z][a-z]|\b(MAS|Dendrite|Synapse)\b",
    )
    .unwrap();
    let mut files = vec!["src/args.rs".to_string()];
    if repo_root().join("src/args").is_dir() {
        let direct = files_below("src/args")
            .into_iter()
            .filter(|file| file.ends_with(".rs") && file.matches('/').count() == 2);
        files.extend(direct);
    }
    let mut named = Vec::new();
    for file in files.iter().filter(|f| repo_root().join(f).exists()) {
        for (number, line) in read(&repo_root().join(file)).lines().enumerate() {
            if !line.trim_start().starts_with("//") && pattern.is_match(line) {
                named.push(format!("{file}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        named.is_empty(),
        "the argument parser names a server ({} lines):\n  {}",
        named.len(),
        named.join("\n  ")
    );
}
