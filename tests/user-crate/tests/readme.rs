//! The README's `Cargo.toml` lines for a user crate are this crate's dependencies: a crate made
//! from them builds (this one does, in every `cargo test --workspace`).

use std::path::Path;

/// `[dependencies]` lines of a TOML text: `name = value`, the paths of path dependencies left
/// out (a user's crate lives elsewhere).
fn dependencies(toml: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        let Some((name, value)) = line.split_once('=').filter(|_| inside && !line.starts_with('#')) else {
            continue;
        };
        let value = value.split('#').next().unwrap_or_default().trim();
        let value = match value.find("path = ") {
            Some(at) => {
                let rest = &value[at + 8..];
                let end = rest.find('"').map_or(rest.len(), |e| e + 1);
                format!("{}path{}", &value[..at], &rest[end..])
            }
            None => value.to_string(),
        };
        out.push((name.trim().to_string(), value));
    }
    out
}

#[test]
fn the_readme_gives_the_lines_this_crate_builds_with() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let marker = "<!-- the dependencies of tests/user-crate/Cargo.toml -->";
    let after = readme.split_once(marker).expect("the README marks its user-crate lines").1;
    let block = after.split_once("```toml").expect("a toml block").1.split_once("```").expect("closed").0;
    let ours = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let readme_lines = dependencies(block);
    assert!(!readme_lines.is_empty(), "no [dependencies] in the README's block:\n{block}");
    assert_eq!(readme_lines, dependencies(&ours), "README.md and tests/user-crate/Cargo.toml disagree");
}

/// The README's Rust blocks marked `<!-- from PATH -->` are excerpts of compiled files: each of
/// their lines (indentation aside) is a line of PATH, in the same order.
#[test]
fn the_readme_s_code_is_the_compiled_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut excerpts = 0;
    for part in readme.split("<!-- from ").skip(1) {
        let (path, rest) = part.split_once(" -->").expect("a closed marker");
        let block = rest.trim_start().strip_prefix("```rust").expect("a rust block after the marker");
        let block = block.split_once("```").expect("closed").0;
        let source = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut lines = source.lines().map(str::trim);
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(
                lines.any(|l| l == line),
                "README.md's excerpt of {path}: `{line}` is not in it (or not in this order)"
            );
        }
        excerpts += 1;
    }
    assert!(excerpts >= 3, "the README's excerpts are marked");
}
