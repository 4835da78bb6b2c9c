//! The README's Rust examples compile: each ```rust block of README.md must appear, line by
//! line and in order, in `examples/readme.rs`, which `cargo test` builds.

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/readme.rs"));

/// The ```rust blocks of a Markdown text, as lists of lines.
fn rust_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```rust") => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some(block) => block.push(line),
        }
    }
    blocks
}

/// `line` with runs of whitespace as one space and none at either end.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The position after the first line of `lines` from `from` on that equals `wanted`
/// (up to whitespace).
fn find(lines: &[&str], from: usize, wanted: &str) -> Option<usize> {
    let wanted = words(wanted);
    lines[from..]
        .iter()
        .position(|line| words(line) == wanted)
        .map(|at| from + at + 1)
}

#[test]
fn every_readme_rust_block_is_in_the_compiled_example() {
    let blocks = rust_blocks(README);
    assert!(!blocks.is_empty(), "README.md has no ```rust block");
    let example: Vec<&str> = EXAMPLE.lines().collect();
    for block in blocks {
        let mut at = 0;
        for line in block.iter().filter(|line| !line.trim().is_empty()) {
            at = find(&example, at, line).unwrap_or_else(|| {
                panic!(
                    "README line {line:?} is not in examples/readme.rs (in this order); \
                     update the example so it compiles, or the README"
                )
            });
        }
    }
}

#[test]
fn blocks_are_found_and_compared_in_order() {
    let markdown = "text\n```rust\nlet a = 1;\nlet b = 2;\n```\n```sh\nls\n```\n";
    assert_eq!(
        rust_blocks(markdown),
        vec![vec!["let a = 1;", "let b = 2;"]]
    );
    let lines = ["    let a = 1;", "    let b  =  2;"];
    assert_eq!(find(&lines, 0, "let b = 2;"), Some(2));
    assert_eq!(find(&lines, 2, "let a = 1;"), None);
}
