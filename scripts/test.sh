#!/usr/bin/env bash
# The one test command: installs what the tests need (redis-server,
# redis-tools, SoftHSM2 from Debian; Azurite from npm, pinned in
# testenv/azurite/package-lock.json), then vets and runs every test of the
# library and of the bench module, the crypto packages also under -race.
#
# Usage: ./scripts/test.sh            (from the repository root)
# Set CI=1 to make a missing component fail its tests instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server    >/dev/null || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
[ -e /usr/lib/x86_64-linux-gnu/pkcs11-spy.so ] || need_apt+=(opensc-pkcs11) # counts PKCS#11 logins in tests
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)                      # cgo, for crypto11
command -v node >/dev/null && command -v npm >/dev/null || need_apt+=(nodejs npm) # Azurite runs on node
command -v script >/dev/null || need_apt+=(bsdutils)                        # a real pty for the CLI's terminal test
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "== installing ${need_apt[*]} (Debian packages)"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The Debian package starts a system redis-server where it can; the tests
# start their own on free ports and need nothing else.

if [ -f testenv/azurite/package-lock.json ] && [ ! -d testenv/azurite/node_modules/azurite ]; then
	echo "== installing Azurite (npm ci, pinned by testenv/azurite/package-lock.json)"
	npm ci --prefix testenv/azurite --no-audit --no-fund --loglevel=error
fi

if [ -f vault/vaulttest/cmd/kvemulator/testdata/jsclient/package-lock.json ] && [ ! -d vault/vaulttest/cmd/kvemulator/testdata/jsclient/node_modules/@azure/keyvault-keys ]; then
	echo "== installing the JavaScript Key Vault clients (npm ci, pinned by vault/vaulttest/cmd/kvemulator/testdata/jsclient/package-lock.json)"
	npm ci --prefix vault/vaulttest/cmd/kvemulator/testdata/jsclient --no-audit --no-fund --loglevel=error
fi

echo "== go vet"
go vet ./...
if [ -f bench/go.mod ]; then (cd bench && go vet ./...); fi

echo "== staticcheck (pinned; exceptions, if any, are justified in staticcheck.conf)"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
if [ -f bench/go.mod ]; then (cd bench && go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...); fi

echo "== go test (all packages)"
go test -count=1 -timeout 15m ./...

echo "== go test -race (crypto and concurrency packages)"
race_pkgs=()
for p in ./internal/stream ./dek ./kek/... ./aof ./nvme ./osdisk ./vault/... ./valuecrypt/... .; do
	d=${p%/...}
	[ -d "$d" ] && ls "$d"/*_test.go >/dev/null 2>&1 && race_pkgs+=("$p")
done
CACHECRYPT_SHORT=1 go test -count=1 -race -timeout 15m "${race_pkgs[@]}"

echo "== soak: every maintenance operation against every writer for 30 s, under -race"
go test -count=1 -race -timeout 5m -run '^TestSoak$' -soak 30s -v . | grep -E '^(---|ok|FAIL)|soak for'

if [ -f bench/go.mod ]; then
	echo "== bench module: tests, and every benchmark once (a smoke run, not a measurement)"
	(cd bench && go test -count=1 -timeout 10m -run . -bench . -benchtime 1x ./...)
fi
