//! `strata` against moto (S3) and Azurite (Azure Blob): `strata setup`, a copy from S3 to S3
//! and from S3 to Azure killed with SIGKILL at each commit step (and in the middle of a
//! multipart upload), then rerun: the output equals the uninterrupted run's, and the abandoned
//! multipart upload is aborted. Needs `scripts/services.sh start`.

use std::path::{Path, PathBuf};
use std::process::Command;
use stratalake_files::SchemaSource;
use stratalake_testkit::assert::sorted_rows;
use stratalake_tests::cloud::{Cloud, Conn, put, read_parquet_at};

use super::common::kill_when_paused;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn s3_yaml(bucket: &str, prefix: &str) -> String {
    format!(
        "      bucket: {bucket}\n      prefix: {prefix}\n      endpoint: {}\n      path_style: true\n      allow_http: true\n      credentials:\n        type: static\n        access_key_id: strata-test\n        secret_access_key: ${{STRATA_TEST_SECRET}}\n",
        Cloud::s3_endpoint()
    )
}

fn azure_yaml(container: &str, prefix: &str) -> String {
    format!(
        "      container: {container}\n      prefix: {prefix}\n      endpoint: {}\n      credentials:\n        type: emulator\n",
        Cloud::azurite_endpoint()
    )
}

/// A pipeline copying `raw/orders/*.ndjson` from the bucket to `sink` (S3 or Azure).
fn pipeline(dir: &Path, name: &str, bucket: &str, sink: &str) -> PathBuf {
    let mut y = format!(
        "pipeline: copy\nsource:\n  s3:\n    connection:\n{}    read:\n      format: ndjson\n      split_size_megabytes: 4\n      schema:\n        explicit:\n",
        s3_yaml(bucket, "raw/orders")
    );
    for (c, t) in stratalake_datagen::orders_schema() {
        y.push_str(&format!("          - {{ name: {c}, type: \"{t}\" }}\n"));
    }
    y.push_str(&format!(
        "sink:\n{sink}    write:\n      target_file_size_megabytes: 64\n      write_concurrency: 1\n      upload_part_size_megabytes: 5\n      abandoned_after_secs: 0\ncheckpoint:\n  s3:\n    connection:\n{}options:\n  batch_size: 4000\n",
        s3_yaml(bucket, &format!("checkpoints/{name}"))
    ));
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

fn strata(args: &[&str], p: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg(p)
        .env("STRATA_TEST_SECRET", "strata-test-secret")
        .output()
        .unwrap()
}

fn run_ok(p: &Path) -> serde_json::Value {
    let out = strata(&["run", "--json"], p);
    assert!(
        out.status.success(),
        "strata run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kill_at(p: &Path, point: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--quiet"])
        .arg(p)
        .env("STRATA_TEST_SECRET", "strata-test-secret");
    kill_when_paused(cmd, point);
}

/// Multipart uploads in progress in a moto bucket (moto does not check signatures on its
/// default port, so a plain GET lists them).
fn open_uploads(bucket: &str) -> usize {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/{bucket}?uploads", Cloud::s3_endpoint())])
        .output()
        .unwrap();
    assert!(out.status.success(), "listing multipart uploads failed");
    String::from_utf8_lossy(&out.stdout)
        .matches("<Upload>")
        .count()
}

fn orders_schema() -> SchemaSource {
    SchemaSource::explicit(stratalake_datagen::orders_schema())
}

async fn output(conn: &Conn) -> Vec<String> {
    sorted_rows(&read_parquet_at(conn, orders_schema()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_killed_at_each_step_resume_to_exactly_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = stratalake_datagen::generate(
        &stratalake_datagen::GeneratorConfig::at_scale(0.15),
        &data,
        &|_| {},
    )
    .unwrap();
    let bucket = Cloud::S3.unmade("copy").name();
    let container = Cloud::Azure.unmade("copy").name();

    // `strata setup` creates the bucket and the container, once.
    let reference = pipeline(
        tmp.path(),
        "reference",
        &bucket,
        &format!(
            "  s3:\n    connection:\n{}",
            s3_yaml(&bucket, "out/reference")
        ),
    );
    let setup = strata(&["setup"], &reference);
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    assert!(String::from_utf8_lossy(&setup.stdout).contains("Created"));
    let to_azure = pipeline(
        tmp.path(),
        "to-azure",
        &bucket,
        &format!(
            "  azure_blob:\n    connection:\n{}",
            azure_yaml(&container, "out/azure")
        ),
    );
    let setup = strata(&["setup"], &to_azure);
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let again = String::from_utf8_lossy(&strata(&["setup"], &to_azure).stdout).to_string();
    assert!(
        again.contains("AlreadyExisted") && !again.contains(": Created"),
        "{again}"
    );

    let conn = Cloud::S3.unmade("unused");
    let Conn::S3(mut s3) = conn else {
        unreachable!()
    };
    s3.bucket = bucket.clone();
    let raw = Conn::S3(s3.clone().with_prefix("raw/orders"));
    put(
        &raw,
        "orders.ndjson",
        std::fs::read(data.join("orders.ndjson")).unwrap(),
    )
    .await;

    let r = run_ok(&reference);
    assert_eq!(r["rows_written"], m.well_formed_order_lines);
    let want = output(&Conn::S3(s3.clone().with_prefix("out/reference"))).await;
    assert_eq!(want.len() as u64, m.well_formed_order_lines);

    // (The commit protocol is the same code on every store; the local-disk CLI test kills at
    // every step. Here: mid-upload, mid-publication (S3's rename is copy + delete) and after
    // the commit; the Azure run below, after the manifest.)
    for point in [
        "files.upload.after_part",
        "files.sink.after_publish_file",
        "runner.before_checkpoint",
    ] {
        let name = point.replace('.', "-");
        let out = Conn::S3(s3.clone().with_prefix(format!("out/{name}")));
        let p = pipeline(
            tmp.path(),
            &name,
            &bucket,
            &format!(
                "  s3:\n    connection:\n{}",
                s3_yaml(&bucket, &format!("out/{name}"))
            ),
        );
        kill_at(&p, point);
        if point == "files.upload.after_part" {
            assert!(
                open_uploads(&bucket) >= 1,
                "the kill left a multipart upload open"
            );
        }
        run_ok(&p);
        assert_eq!(output(&out).await, want, "S3 after SIGKILL at {point}");
        assert_eq!(
            open_uploads(&bucket),
            0,
            "{point}: no multipart upload is left open"
        );
        assert_eq!(run_ok(&p)["outcome"], "NothingNew", "{point}");
    }

    // The same to Azure, killed after its manifest.
    kill_at(&to_azure, "files.sink.after_manifest");
    run_ok(&to_azure);
    let az =
        stratalake_azure_blob::AzureBlobConfig::emulator(&container, Cloud::azurite_endpoint())
            .with_prefix("out/azure");
    assert_eq!(output(&Conn::Azure(az)).await, want, "Azure after SIGKILL");
}

#[test]
fn bad_credentials_fail_check_with_an_auth_error_and_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let y = format!(
        "pipeline: auth\nsource:\n  s3:\n    connection:\n      bucket: any-bucket\n      endpoint: {}\n      path_style: true\n      allow_http: true\n      credentials:\n        type: static\n        access_key_id: AKIAWRONG\n        secret_access_key: ${{STRATA_TEST_SECRET}}\n    read:\n      format: ndjson\n      schema:\n        explicit:\n          - {{ name: id, type: int64 }}\nsink:\n  parquet:\n    root: '{}'\ncheckpoint: memory\n",
        Cloud::s3_auth_endpoint(),
        tmp.path().join("out").display()
    );
    let p = tmp.path().join("auth.yaml");
    std::fs::write(&p, y).unwrap();
    let out = strata(&["check"], &p);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credentials") && err.contains("s3://any-bucket"),
        "{err}"
    );
    assert!(!err.contains("strata-test-secret"), "{err}");
}
