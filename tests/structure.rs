//! The shape of the repository, checked by reading its files (no server, no
//! module run): CONTRIBUTING.md's layout table matches the tree.

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
