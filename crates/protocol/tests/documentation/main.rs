//! The documentation keeps up with the tree: the settings table names every setting, and every file or directory
//! the Markdown documents name (in `code` or as a link) exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

#[test]
fn the_settings_table_names_every_setting() {
    let settings_page =
        std::fs::read_to_string(repository_root().join("docs/settings.md")).expect("docs/settings.md");
    let missing: Vec<String> = protocol::settings::every_setting_name()
        .into_iter()
        .filter(|name| !settings_page.contains(&format!("| `{name}` |")))
        .collect();
    assert!(missing.is_empty(), "settings missing from the table in docs/settings.md: {missing:?}");
}

/// The project's own Markdown: the front page, the architecture, `docs/`, and the guides beside the code.
const DOCUMENTS: [&str; 7] = [
    "README.md",
    "ARCHITECTURE.md",
    "docs",
    "loadtest/README.md",
    "tests/chaos/README.md",
    "dashboards/README.md",
    "deploy/k8s/README.md",
];

/// Directories that are built or written at run time, never part of the tree.
const GENERATED_DIRECTORIES: [&str; 5] = ["target", ".git", ".run", "node_modules", "__pycache__"];

/// Paths the documents name that a user creates or a run writes: `cp deploy/.env.example deploy/.env`, the
/// Kubernetes overlay deploy/k8s/README.md shows (kept out of version control), results and run directories.
const PATHS_MADE_AT_RUN_TIME: [&str; 5] = ["deploy/.env", "production", "loadtest/results", ".run", "target"];

/// A name in code that ends like one of these is a file name.
const FILE_EXTENSIONS: [&str; 17] = [
    ".rs",
    ".lua",
    ".py",
    ".sh",
    ".md",
    ".toml",
    ".yaml",
    ".yml",
    ".json",
    ".js",
    ".css",
    ".html",
    ".svg",
    ".png",
    ".template",
    ".sample",
    ".conf",
];

#[test]
fn every_path_the_documents_name_exists() {
    let root = repository_root();
    let tree = every_path_in_the_tree(&root);
    let top_level: BTreeSet<String> =
        tree.iter().filter(|path| !path.contains('/')).map(|path| format!("{path}/")).collect();
    let mut missing = Vec::new();
    for document in markdown_documents(&root) {
        let text = std::fs::read_to_string(&document).expect("a readable document");
        let document_directory = document.parent().expect("a file has a directory");
        let relative_document = document.strip_prefix(&root).expect("inside the root").display().to_string();
        for named in code_spans(&text).filter_map(|span| path_named_in_code(span, &top_level)) {
            if !exists(&named, &root, document_directory, &tree)
                && !made_at_run_time(&document_directory.join(&named), &root)
            {
                missing.push(format!("{relative_document}: `{named}`"));
            }
        }
        for target in link_targets(&text) {
            if !document_directory.join(&target).exists() {
                missing.push(format!("{relative_document}: link to {target}"));
            }
        }
    }
    assert!(missing.is_empty(), "the documents name paths that do not exist:\n{}", missing.join("\n"));
}

fn markdown_documents(root: &Path) -> Vec<PathBuf> {
    let mut documents = Vec::new();
    for document in DOCUMENTS {
        let path = root.join(document);
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("a readable directory");
            documents.extend(
                entries
                    .map(|entry| entry.expect("an entry").path())
                    .filter(|entry| entry.extension().is_some_and(|extension| extension == "md")),
            );
        } else {
            documents.push(path);
        }
    }
    documents
}

/// Every file and directory under `root`, as paths relative to it with `/` separators (directories end without one).
fn every_path_in_the_tree(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            if GENERATED_DIRECTORIES.contains(&name.as_str()) || made_at_run_time(&path, root) {
                continue;
            }
            found.insert(
                path.strip_prefix(root).expect("inside the root").to_string_lossy().replace('\\', "/"),
            );
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

/// The contents of every `inline code` span outside fenced code blocks.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    let mut in_fence = false;
    text.lines()
        .filter(move |line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .flat_map(|line| line.split('`').skip(1).step_by(2))
}

/// The path a code span names, if it names one: a single word that ends like a file name, or that starts with one
/// of the repository's top-level directories. Placeholders, URLs, routes and Redis keys are not paths.
fn path_named_in_code(span: &str, top_level: &BTreeSet<String>) -> Option<String> {
    let span = span.trim();
    let not_a_path = span.is_empty()
        || span.contains(|character: char| {
            character.is_whitespace() || "<>{}*$=:?,|()[]\"'@%".contains(character)
        })
        || span.starts_with('/')
        || span.starts_with('-')
        || span.starts_with('.') && !span.starts_with(".github") && !span.starts_with(".ci");
    if not_a_path {
        return None;
    }
    let looks_like_a_file = FILE_EXTENSIONS.iter().any(|extension| span.ends_with(extension));
    let starts_in_the_tree = top_level.iter().any(|directory| span.starts_with(directory.as_str()));
    let path = span.trim_end_matches('/');
    let made_at_run_time =
        PATHS_MADE_AT_RUN_TIME.iter().any(|made| path == *made || path.starts_with(&format!("{made}/")));
    ((looks_like_a_file || starts_in_the_tree) && !made_at_run_time).then(|| path.to_owned())
}

/// True for a path under one of [`PATHS_MADE_AT_RUN_TIME`], named relative to its document (`results/x.svg` in
/// loadtest/README.md).
fn made_at_run_time(path: &Path, root: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else { return false };
    let relative = relative.to_string_lossy();
    PATHS_MADE_AT_RUN_TIME.iter().any(|made| relative == *made || relative.starts_with(&format!("{made}/")))
}

/// A path exists when it does from the root or from the document's directory, or when it is the end of a path in
/// the tree: code maps name files by their place in a crate (`provider/openai.rs`) or by name alone.
fn exists(path: &str, root: &Path, document_directory: &Path, tree: &BTreeSet<String>) -> bool {
    root.join(path).exists()
        || document_directory.join(path).exists()
        || tree.iter().any(|known| known == path || known.ends_with(&format!("/{path}")))
}

/// Relative link targets (`[text](target)` and `![alt](target)`), without their `#anchor`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split('#').next().unwrap_or_default().trim();
        let external = target.contains("://") || target.starts_with("mailto:");
        if !target.is_empty() && !external {
            targets.push(target.to_owned());
        }
        rest = &after[end..];
    }
    targets
}
