#!/bin/sh
# Installs what the private Cyrus instances of the end-to-end tests need, from Debian's
# packages. Idempotent and quick when everything is there already (dpkg -s, no apt-get).
# Never touches the system's own Cyrus configuration or spool: our instances live in their
# own directories and ports (see start.sh); a system cyrus started by the package is left alone.
set -eu

# cyrus-replication: sync_server, which the restore-into-Cyrus tests write through.
# postgresql-15, openssl: the fleet tests' private PostgreSQL and its test certificates
# (tests/postgres/start.sh).
PACKAGES="cyrus-imapd cyrus-admin cyrus-clients cyrus-replication sasl2-bin libsasl2-modules python3 util-linux strace sqlite3 postgresql-15 openssl man-db chromium chromium-driver"
# man-db: `man -l` of backup-server's generated pages (tests/tests/manpages.rs).
# chromium, chromium-driver: the console's tests drive a headless Chromium (WebDriver).

missing=""
for p in $PACKAGES; do
    # `dpkg -s` also lists removed-but-configured packages: check the status word.
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ] && [ -x /usr/lib/cyrus/bin/master ] && [ -x /usr/lib/cyrus/bin/sync_server ] \
    && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
    echo "install.sh: cyrus already installed"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n "$0" "$@"
    fi
    echo "install.sh: must run as root to install:$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Without a policy-rc.d the package's postinst may start a system cyrus; that one listens on
# the standard ports and directories, ours do not, so it is harmless. Still, do not start it
# when we are the ones installing: nothing needs it, and CI machines have no init anyway.
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=yes
fi
cleanup() { [ "$created_policy" = yes ] && rm -f "$policy"; true; }
trap cleanup EXIT

echo "install.sh: installing:$missing"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $missing </dev/null

for prog in master sync_server; do
    test -x /usr/lib/cyrus/bin/$prog || { echo "install.sh: /usr/lib/cyrus/bin/$prog missing after install" >&2; exit 1; }
done
id cyrus >/dev/null 2>&1 || { echo "install.sh: no cyrus user after install" >&2; exit 1; }
echo "install.sh: done"
