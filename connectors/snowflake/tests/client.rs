//! The client against fakesnow: bindings, results, PUT + COPY, errors.

mod common;

use arrow_cast::pretty::pretty_format_batches;
use stratalake_core::ErrorKind;
use stratalake_snowflake::client::{Bindings, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_results_and_dml_counts() {
    let db = common::unique("client");
    let c = common::session(&db).await;
    c.query("CREATE TABLE T (ID INT, NAME VARCHAR, PRICE NUMBER(10,2), TS TIMESTAMP_TZ, D DATE, OK BOOLEAN, B BINARY, F FLOAT)")
        .await
        .unwrap();
    let r = c
        .query_with(
            "INSERT INTO T VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &Bindings::Positional(vec![
                Value::Int(1),
                Value::Text("Anna's shop".into()),
                Value::Decimal("12.34".into()),
                Value::TimestampTz(1_700_000_000_123_456_000),
                Value::Date(19_675),
                Value::Bool(true),
                Value::Binary(vec![0xab, 0x01]),
                Value::Float(1.5),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 1);
    let r = c
        .query_with(
            "INSERT INTO T (ID, NAME) VALUES (?, ?)",
            &Bindings::Array(vec![
                (
                    "FIXED",
                    vec![Some("2".into()), Some("3".into()), Some("4".into())],
                ),
                ("TEXT", vec![Some("b".into()), None, Some("d".into())]),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 3);
    let r = c.query("SELECT * FROM T ORDER BY ID").await.unwrap();
    assert_eq!(
        pretty_format_batches(&r.batches).unwrap().to_string(),
        "+----+-------------+-------+-----------------------------+------------+------+------+-----+\n\
         | ID | NAME        | PRICE | TS                          | D          | OK   | B    | F   |\n\
         +----+-------------+-------+-----------------------------+------------+------+------+-----+\n\
         | 1  | Anna's shop | 12.34 | 2023-11-14T22:13:20.123456Z | 2023-11-14 | true | ab01 | 1.5 |\n\
         | 2  | b           |       |                             |            |      |      |     |\n\
         | 3  |             |       |                             |            |      |      |     |\n\
         | 4  | d           |       |                             |            |      |      |     |\n\
         +----+-------------+-------+-----------------------------+------------+------+------+-----+"
    );
    assert!(!r.query_id.is_empty());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_copy_loads_parquet() {
    let db = common::unique("put");
    let c = common::session(&db).await;
    c.query("CREATE TABLE T (ID INT, V VARCHAR)").await.unwrap();
    c.query("CREATE STAGE IF NOT EXISTS ST").await.unwrap();
    let batch = arrow_array::RecordBatch::try_from_iter(vec![
        (
            "id",
            std::sync::Arc::new(arrow_array::Int64Array::from(vec![1, 2])) as arrow_array::ArrayRef,
        ),
        (
            "v",
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a", "b"])),
        ),
    ])
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    c.put("@ST/e1", "part-0.parquet", buf.into()).await.unwrap();
    c.query(
        "COPY INTO T FROM @ST/e1 FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE",
    )
    .await
    .unwrap();
    let r = c.query("SELECT ID, V FROM T ORDER BY ID").await.unwrap();
    assert_eq!(r.num_rows(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_object_and_the_code() {
    let db = common::unique("errors");
    let c = common::session(&db).await;
    let e = c.query("SELECT * FROM NO_SUCH_TABLE").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e.report());
    assert!(e.report().contains("NO_SUCH_TABLE"), "{}", e.report());
    assert_eq!(e.context_value("code"), Some("002003"));
    let e = c.query("SELEC 1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{}", e.report());
    assert_eq!(e.context_value("code"), Some("001003"));
    assert!(e.report().contains("SELEC 1"), "{}", e.report());
    assert!(!e.is_retryable());
}

/// Snowflake commits the open transaction before any DDL (fakesnow does not): the client
/// refuses DDL while a transaction is open, so this stand-in guards the real semantics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_inside_an_open_transaction_is_refused() {
    let db = common::unique("txn");
    let c = common::session(&db).await;
    c.query("CREATE TABLE T (ID INT)").await.unwrap();
    c.query("BEGIN").await.unwrap();
    c.query("INSERT INTO T VALUES (1)").await.unwrap();
    let e = c
        .query("CREATE TABLE IF NOT EXISTS Q (ID INT)")
        .await
        .expect_err("DDL inside a transaction");
    assert_eq!(e.kind(), ErrorKind::Internal, "{}", e.report());
    assert!(e.report().contains("open transaction"), "{}", e.report());
    c.query("ROLLBACK").await.unwrap();
    let n = c.query("SELECT COUNT(*) FROM T").await.unwrap();
    assert!(
        pretty_format_batches(&n.batches)
            .unwrap()
            .to_string()
            .contains("| 0 "),
        "the insert rolled back"
    );
    c.query("CREATE TABLE IF NOT EXISTS Q (ID INT)")
        .await
        .expect("DDL outside a transaction");
}
