# Shared by the sh test suites: a temporary directory $T removed on exit, ok/no/check that print one
# line per check, and summary, which prints the closing "N passed, N failed" line and sets the
# exit status. Source it with: . "$(dirname "$0")/lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok    $1"; }
no() { fail=$((fail + 1)); echo "FAIL  $1"; }
check() { # name, then a command that must succeed
    _check=$1
    shift
    if "$@"; then ok "$_check"; else no "$_check"; fi
}
summary() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
