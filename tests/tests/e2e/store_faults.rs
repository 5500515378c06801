//! Transient failures between Strata and the store are retried with backoff: an in-process
//! TCP proxy in front of moto and Azurite answers the first connections with a 503, a reset
//! or a stall, then forwards. A store that keeps failing ends in a clear error naming the
//! location, after the configured retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stratalake_core::{Context, ErrorKind, ReadRequest, Source};
use stratalake_files::cloud::{CloudSourceConfig, HttpSettings};
use stratalake_files::{FileSourceConfig, Format, SchemaSource};
use stratalake_tests::cloud::{Cloud, Conn, put};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Unavailable,
    Reset,
    Stall,
}

/// A proxy to `upstream` that spoils the connections listed in `faults` (by order of
/// arrival), or every connection when `always` is set. Returns its address and a counter of
/// connections seen.
async fn proxy(
    upstream: String,
    faults: Vec<Fault>,
    always: Option<Fault>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let fault = always.or_else(|| faults.get(n).copied());
            let upstream = upstream.clone();
            tokio::spawn(async move {
                match fault {
                    Some(Fault::Unavailable) => {
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf).await;
                        let _ = client
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                    }
                    Some(Fault::Reset) => {
                        let mut buf = [0u8; 16];
                        let _ = client.read(&mut buf).await;
                        drop(client);
                    }
                    Some(Fault::Stall) => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    None => {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn through(conn: &Conn, endpoint: &str, retries: u32) -> Conn {
    let http = HttpSettings::default()
        .with_max_retries(retries)
        .with_backoff(10, 1)
        .with_request_timeout_secs(2)
        .with_retry_timeout_secs(60);
    match conn {
        Conn::S3(c) => Conn::S3(c.clone().with_endpoint(endpoint).with_http(http)),
        Conn::Azure(c) => {
            let mut c = c.clone().with_http(http);
            c.endpoint = Some(endpoint.to_string());
            Conn::Azure(c)
        }
    }
}

fn upstream(cloud: Cloud) -> String {
    let e = match cloud {
        Cloud::S3 => Cloud::s3_endpoint(),
        Cloud::Azure => Cloud::azurite_endpoint(),
    };
    e.trim_start_matches("http://").to_string()
}

async fn rows_read(source: &dyn Source) -> stratalake_core::Result<usize> {
    let ctx = Context::builder("faults").build();
    let (batches, _) = stratalake_core::read_all(source, &ReadRequest::after(None), &ctx).await?;
    Ok(batches
        .iter()
        .map(stratalake_core::RecordBatch::num_rows)
        .sum())
}

fn read_cfg() -> FileSourceConfig {
    let mut read = FileSourceConfig::new("", Format::Ndjson);
    read.schema = SchemaSource::explicit([("id", "int64 not null")]);
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_lasting_ones_named() {
    for cloud in [Cloud::S3, Cloud::Azure] {
        let conn = cloud.fresh("faults").await;
        let body: String = (0..1000).map(|i| format!("{{\"id\":{i}}}\n")).collect();
        put(&conn, "in/a.ndjson", body.clone().into_bytes()).await;
        put(&conn, "in/b.ndjson", body.into_bytes()).await;

        let faults = vec![
            Fault::Unavailable,
            Fault::Reset,
            Fault::Stall,
            Fault::Unavailable,
        ];
        let (endpoint, seen) = proxy(upstream(cloud), faults, None).await;
        let flaky = through(&conn.with_prefix("in"), &endpoint, 10);
        let source = CloudSourceConfig::new(flaky, read_cfg())
            .build()
            .await
            .unwrap();
        assert_eq!(rows_read(&source).await.unwrap(), 2000, "{cloud:?}");
        assert!(
            seen.load(Ordering::SeqCst) > 4,
            "{cloud:?}: the faults were met and retried"
        );

        let (endpoint, _) = proxy(upstream(cloud), Vec::new(), Some(Fault::Unavailable)).await;
        let down = through(&conn.with_prefix("in"), &endpoint, 2);
        let source = CloudSourceConfig::new(down, read_cfg())
            .build()
            .await
            .unwrap();
        let e = rows_read(&source).await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::RateLimited),
            "{cloud:?}: {e:#}"
        );
        assert!(
            e.is_retryable(),
            "{cloud:?}: the runner may retry the epoch: {e:#}"
        );
        assert!(format!("{e:#}").contains(&conn.name()), "{cloud:?}: {e:#}");
        assert!(e.report().contains("retries"), "{cloud:?}: {}", e.report());
    }
}
