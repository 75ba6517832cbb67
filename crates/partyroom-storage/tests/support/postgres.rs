//! The PostgreSQL server the tests use (`PARTYROOM_TEST_POSTGRES_URL`, started by
//! `scripts/test.sh`), and throwaway tables in it.

const URL_VAR: &str = "PARTYROOM_TEST_POSTGRES_URL";

/// The server to test against, or `None` (after saying so) when none is configured
/// outside CI. In CI (`CI=true`) a missing server fails the test: it is never skipped.
pub fn postgres_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
                panic!(
                    "{URL_VAR} is not set, and CI=true: the PostgreSQL backend must be \
                     tested in CI (scripts/test.sh starts a server and sets it)"
                );
            }
            eprintln!(
                "postgres test skipped: set {URL_VAR} \
                 (e.g. postgres://postgres@127.0.0.1:55432/partyroom_test) to run it"
            );
            None
        }
    }
}

/// A table of this test run only, dropped at the end.
pub fn table_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("partyroom_test_{test}_{}_{nanos}", std::process::id())
}

pub async fn drop_table(url: &str, table: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
}
