//! Databases of their own on the PostgreSQL test server
//! (`POUND_TEST_DATABASE_URL`), so that tests and runs never share rows.

use sqlx::Connection;

/// Creates a database named `prefix` and 16 random hex digits on the server
/// `admin_url` names; its name and its URL (the admin URL with the database
/// replaced).
pub async fn fresh_database(admin_url: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("PostgreSQL answers");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base);
    let url = format!("{base}/{name}");
    (name, url)
}

/// Drops database `name` (FORCE: a node's pool may still hold connections);
/// a failure only leaves it behind.
pub async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
    }
}
