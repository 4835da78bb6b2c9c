//! Report folders given on the command line (`lab --out`, `bench --svg`), checked before any
//! work starts so that a folder tumbler cannot write to is refused at once, not after every
//! measurement ran.

use std::path::Path;

/// Creates `dir` (and its parents) and checks that a file can be written in it; the error
/// names `flag` and says what to do.
pub fn writable(flag: &str, dir: &Path) -> Result<(), String> {
    let refuse = |e: std::io::Error| {
        format!(
            "{flag} {}: cannot write there ({e}); give a folder you can write to",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(refuse)?;
    let probe = dir.join(format!(".tumbler-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(refuse)?;
    std::fs::remove_file(&probe).map_err(refuse)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unwritable_folder_is_refused_with_its_flag() {
        let e = super::writable("--out", std::path::Path::new("/proc/tumbler-x")).unwrap_err();
        assert!(
            e.starts_with("--out /proc/tumbler-x: cannot write there"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("tumbler-out-dir-{}", std::process::id()));
        super::writable("--svg", &dir.join("a/b")).expect("a writable folder");
        assert_eq!(
            std::fs::read_dir(dir.join("a/b")).map(|d| d.count()).ok(),
            Some(0)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
