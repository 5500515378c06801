//! Helpers the binary's end-to-end tests share.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Start `cmd` with `STRATA_PAUSE_AT=point`, wait (up to two minutes) until it reports that
/// it paused there, then SIGKILL it. Fails the test when it never got there.
pub fn kill_when_paused(mut cmd: Command, point: &str) {
    let mut child = cmd
        .env("STRATA_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let needle = format!("paused at {point}");
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader ends when the killed child's stderr closes.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    let reached = rx.recv_timeout(Duration::from_secs(120)).is_ok();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(reached, "the process reached {point} (status {status})");
}
