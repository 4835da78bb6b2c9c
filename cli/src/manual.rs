//! `tumbler completions SHELL` and `tumbler man`: the shell completion script and the man
//! pages, generated from the same clap definition as `--help`, so they never disagree with it.

use std::io::Write;
use std::path::Path;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell, command: clap::Command) -> Result<(), String> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible(command), "tumbler", &mut out);
    write_stdout(&out)
}

/// The command tree a user types: without hidden subcommands (the lab's worker), which
/// clap_complete would offer too.
fn visible(command: clap::Command) -> clap::Command {
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("tumbler")
        .version(env!("CARGO_PKG_VERSION"))
        .args(command.get_arguments().cloned())
        .subcommands(subcommands)
}

/// Without `out`: writes the man page `tumbler(1)` to stdout. With it: writes `tumbler.1` and
/// one page per subcommand (`tumbler-run.1`, ...) into that folder and lists them on stderr.
pub fn man(command: clap::Command, out: Option<&Path>) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("writing the man page: {e}");
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(failed)?;
            write_stdout(&page)
        }
        Some(dir) => {
            crate::out_dir::writable("--out", dir)?;
            clap_mangen::generate_to(command, dir).map_err(failed)?;
            eprintln!("man pages written to {}", dir.display());
            Ok(())
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}
