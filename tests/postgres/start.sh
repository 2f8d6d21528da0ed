#!/bin/sh
# Starts a private PostgreSQL 15 (Debian's postgresql-15) for the tests: a new cluster in
# DIR/data, listening on 127.0.0.1:PORT only (its socket in DIR), password (SCRAM)
# authentication only, one role ROLE (no superuser) with the password in PWFILE owning database DB; the
# superuser pgadmin has the same password.
#
#   start.sh DIR PORT ROLE DB PWFILE [tls]
#
# With `tls`: a test CA (DIR/tls/ca.pem) and a server certificate for 127.0.0.1 made with
# openssl, `ssl = on`, and only TLS connections accepted; DIR/tls/other-ca.pem is an
# unrelated CA (a client trusting it must refuse the server).
#
# initdb refuses to run as root, so the cluster belongs to the unprivileged system user
# mailbackup-pg, created here when missing (idempotent; concurrent tests serialise on a lock).
# stop.sh DIR stops it. Never touches a system PostgreSQL cluster.
set -eu
dir=$1 port=$2 role=$3 db=$4 pwfile=$5 tls=${6:-}
bin=/usr/lib/postgresql/15/bin
pguser=mailbackup-pg

[ -x $bin/initdb ] || { echo "start.sh: $bin/initdb missing: run tests/cyrus/install.sh (postgresql-15)" >&2; exit 1; }

if ! id $pguser >/dev/null 2>&1; then
    # flock: two tests starting at once must not both run useradd.
    (
        flock 9
        id $pguser >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin $pguser
    ) 9>/tmp/mailbackup-pg-useradd.lock
fi

# The cluster's user must reach DIR: the test's temporary directory is root's and 0700.
chmod 0711 "$dir"
install -d -o $pguser -m 0700 "$dir/data" "$dir/run"
# The superuser's password file, readable by the cluster's user only for initdb.
install -o $pguser -m 0600 "$pwfile" "$dir/run/pw"
as_pg() { setpriv --reuid=$pguser --regid=$pguser --init-groups --reset-env -- "$@"; }
as_pg $bin/initdb -D "$dir/data" -U pgadmin --pwfile="$dir/run/pw" --auth=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --no-instructions >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
rm -f "$dir/run/pw"
# Small and quick: a test cluster, fsync off (a machine crash loses a test, not data).
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
logging_collector = off
CONF
# Loopback TCP with a password only: no trust, no peer.
cat >"$dir/data/pg_hba.conf" <<HBA
host all all 127.0.0.1/32 scram-sha-256
HBA
if [ "$tls" = tls ]; then
    t="$dir/tls"
    mkdir -p "$t"
    for ca in ca other-ca; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=mailbackup test $ca" -keyout "$t/$ca.key" -out "$t/$ca.pem" 2>/dev/null
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$t/ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 2 -extfile "$t/ext" -out "$t/server.pem" 2>/dev/null
    install -o $pguser -m 0600 "$t/server.key" "$dir/data/server.key"
    install -o $pguser -m 0644 "$t/server.pem" "$dir/data/server.crt"
    printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$dir/data/postgresql.conf"
    # TLS only: a client without it finds no pg_hba entry.
    echo "hostssl all all 127.0.0.1/32 scram-sha-256" >"$dir/data/pg_hba.conf"
    # The admin's psql below must use it too.
    export PGSSLMODE=require
fi
as_pg $bin/pg_ctl -D "$dir/data" -l "$dir/data/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/data/server.log" >&2; exit 1; }
# The program's role is no superuser: it owns its database and nothing else (docs/fleet.md).
PGPASSWORD=$(cat "$pwfile") $bin/psql -X -q -v ON_ERROR_STOP=1 -v role="$role" -v db="$db" \
    -v pw="$(cat "$pwfile")" -h 127.0.0.1 -p "$port" -U pgadmin -d postgres >/dev/null <<SQL
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
SQL
echo "start.sh: postgresql on 127.0.0.1:$port, database $db, role $role"
