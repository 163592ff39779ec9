#!/usr/bin/env bash
# Runs Herald's whole test suite: unit tests, the storage conformance suite on SQLite and
# PostgreSQL, API integration tests, the fleet test, the signature checks with the official
# Standard Webhooks library, and Schemathesis against the OpenAPI document.
#
# It installs or starts what the tests need. Nothing is skipped silently: when PostgreSQL cannot
# be reached the PostgreSQL tests fail (set HERALD_TEST_SKIP_POSTGRES=1 to skip them on purpose,
# which is refused under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUST_BACKTRACE=1
PG_URL="${HERALD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -d "$PG_URL" -q
    else
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}

if [ "${HERALD_TEST_SKIP_POSTGRES:-}" != "1" ] && ! pg_ready; then
    echo "PostgreSQL is not answering at $PG_URL; trying to start the local cluster"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        version=$(ls /etc/postgresql 2>/dev/null | head -n 1)
        [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
    fi
    if ! pg_ready; then
        echo "error: PostgreSQL is required by the test suite (HERALD_TEST_POSTGRES_URL or 127.0.0.1:5432)" >&2
        exit 1
    fi
fi

# Browser tests drive Debian's Chromium through ChromeDriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing Debian's chromium and chromium-driver for the browser tests"
    if [ "$(id -u)" = "0" ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
    $apt_get update -q
    DEBIAN_FRONTEND=noninteractive $apt_get install -y -q chromium chromium-driver
fi

# The API conformance test runs Schemathesis from PyPI, in a virtual environment of its own.
schemathesis_venv=target/schemathesis
wanted=$(cat tests/schemathesis/requirements.txt)
if ! "$schemathesis_venv/bin/pip" freeze 2>/dev/null | grep -qxF "$wanted"; then
    echo "installing $wanted into $schemathesis_venv"
    python3 -m venv "$schemathesis_venv"
    "$schemathesis_venv/bin/pip" install --quiet --disable-pip-version-check \
        -r tests/schemathesis/requirements.txt
fi

cargo test --workspace --all-targets --locked "$@"
