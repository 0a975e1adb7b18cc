//! `busline log`: the log tools keep what they can read and name what
//! they cannot.

use std::process::Command;

/// `busline log append` keeps the lines before one that is not UTF-8 and
/// names it (it kept none and named no line).
#[test]
fn log_append_keeps_the_lines_before_a_bad_one() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(["log", "append", log.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1}\n{\"a\":2}\n\xff\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3"), "{err}");
    let info = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(["log", "info", log.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("offsets 0..2"), "{text}");
}
