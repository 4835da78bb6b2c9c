//! `tumbler completions` and `tumbler man` are generated from the same definition as
//! `--help`: every subcommand a user can type is in them, the internal one is not.

use std::process::{Command, Output};

fn tumbler(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(args)
        .env_remove("TUMBLER_URL")
        .output()
        .expect("run tumbler");
    assert!(
        out.status.success(),
        "tumbler {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const SUBCOMMANDS: [&str; 9] = [
    "run",
    "elect",
    "leader",
    "status",
    "revoke",
    "bench",
    "lab",
    "completions",
    "man",
];

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _tumbler"),
        ("zsh", "#compdef tumbler"),
        ("fish", "complete -c tumbler"),
    ] {
        let script = String::from_utf8(tumbler(&["completions", shell]).stdout).expect("UTF-8");
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            !script.contains("lab-worker"),
            "{shell} completes the internal worker"
        );
        assert!(
            script.contains("target") && script.contains("fault"),
            "{shell}: no bench or lab flags"
        );
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(["completions", "tcsh"])
        .output()
        .expect("run tumbler");
    assert_eq!(out.status.code(), Some(77));
}

#[test]
fn man_page_documents_every_subcommand_and_the_exit_codes() {
    let page = String::from_utf8(tumbler(&["man"]).stdout).expect("UTF-8");
    assert!(page.contains(".TH tumbler 1"), "not a man page:\n{page}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
    assert!(
        !page.contains("lab\\-worker"),
        "the man page lists the internal worker"
    );
    assert!(page.contains("77"), "the exit codes are missing");
}

#[test]
fn man_out_writes_one_page_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("tumbler-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tumbler(&["man", "--out", dir.to_str().expect("UTF-8 temp path")]);
    for page in [
        "tumbler.1",
        "tumbler-run.1",
        "tumbler-lab.1",
        "tumbler-bench.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} missing or empty");
    }
    assert!(!dir.join("tumbler-lab-worker.1").exists());
    let _ = std::fs::remove_dir_all(dir);
}
