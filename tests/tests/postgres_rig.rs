//! The private PostgreSQL of the fleet tests starts, takes the role's password and refuses a
//! wrong one, and is gone once dropped.

use tests::postgres::PostgresInstance;

#[test]
fn private_postgres_starts_accepts_the_password_and_refuses_a_wrong_one() {
    let pg = PostgresInstance::start().unwrap();
    let mut c = postgres::Client::connect(&pg.conn_string(pg.password()), postgres::NoTls)
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    let row = c
        .query_one("SELECT current_user::text, version(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), tests::postgres::ROLE);
    assert!(row.get::<_, String>(1).starts_with("PostgreSQL 15."));
    assert!(
        !row.get::<_, bool>(2),
        "the program's role must not be a superuser"
    );
    // The role owns its database: it can make tables.
    c.batch_execute("CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (1)")
        .unwrap();
    let wrong = postgres::Client::connect(&pg.conn_string("not-the-password"), postgres::NoTls)
        .err()
        .expect("a wrong password must be refused");
    let said = wrong.as_db_error().map(|d| d.message().to_string());
    assert!(
        said.as_deref()
            .is_some_and(|m| m.contains("password authentication failed")),
        "{wrong:?}"
    );
    let port = pg.port();
    drop(c);
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after drop"
    );
}
