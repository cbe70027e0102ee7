#!/bin/sh
# Makes the personal access token of the Rocket.Chat admin (ADMIN_USERNAME / ADMIN_PASS, from
# rocketchat-admin.env) that authgate's bridge uses, and writes the admin's user id and the token
# to $OUT_DIR/admin-user-id and $OUT_DIR/admin-token, readable only by authgate's uid. The
# rocketchat-bootstrap service of compose.rocketchat.yml runs it before authgate starts. A token
# that still works is kept, so running it again changes nothing; delete the two files to get a
# new one.
set -eu

RC="${ROCKETCHAT_URL:-http://rocketchat:3000}"
OUT="${OUT_DIR:-/run/authgate-bootstrap}"
OWNER="${OUT_OWNER:-65532:65532}"
TOKEN_NAME=authgate
: "${ADMIN_USERNAME:?set it in rocketchat-admin.env}"
: "${ADMIN_PASS:?set it in rocketchat-admin.env}"

fail() {
    echo "rocketchat-bootstrap: $*" >&2
    exit 1
}

# The value of a string field in a one-line JSON answer.
field() {
    sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n 1
}

case "$ADMIN_USERNAME$ADMIN_PASS" in
*\"* | *\\*) fail "ADMIN_USERNAME and ADMIN_PASS must not hold double quotes or backslashes" ;;
esac

echo "rocketchat-bootstrap: waiting for Rocket.Chat at $RC"
waited=0
until curl -fsS -o /dev/null "$RC/api/info"; do
    waited=$((waited + 2))
    [ "$waited" -le "${WAIT_SECONDS:-600}" ] || fail "Rocket.Chat did not answer within ${WAIT_SECONDS:-600}s"
    sleep 2
done

if [ -s "$OUT/admin-user-id" ] && [ -s "$OUT/admin-token" ] &&
    curl -fsS -o /dev/null "$RC/api/v1/me" \
        -H "X-User-Id: $(cat "$OUT/admin-user-id")" -H "X-Auth-Token: $(cat "$OUT/admin-token")"; then
    echo "rocketchat-bootstrap: the token in $OUT still works; nothing to do"
    exit 0
fi

login=$(curl -fsS "$RC/api/v1/login" -H 'Content-Type: application/json' \
    -d "{\"user\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASS\"}") ||
    fail "cannot log in as $ADMIN_USERNAME (Rocket.Chat creates it from ADMIN_* on its first start only)"
user_id=$(printf '%s' "$login" | field userId)
auth_token=$(printf '%s' "$login" | field authToken)
[ -n "$user_id" ] && [ -n "$auth_token" ] || fail "unexpected login answer: $login"

# Should two-factor authentication be on, Rocket.Chat takes the password's SHA-256 as the code.
code=$(printf '%s' "$ADMIN_PASS" | sha256sum | cut -d ' ' -f 1)
as_admin() {
    curl -fsS "$RC/api/v1/$1" -H 'Content-Type: application/json' \
        -H "X-User-Id: $user_id" -H "X-Auth-Token: $auth_token" \
        -H "X-2fa-Method: password" -H "X-2fa-Code: $code" -d "$2"
}
# A token of the same name from an earlier run would block a new one.
as_admin users.removePersonalAccessToken "{\"tokenName\":\"$TOKEN_NAME\"}" >/dev/null 2>&1 || true
made=$(as_admin users.generatePersonalAccessToken \
    "{\"tokenName\":\"$TOKEN_NAME\",\"bypassTwoFactor\":true}") ||
    fail "cannot make a personal access token for $ADMIN_USERNAME"
token=$(printf '%s' "$made" | field token)
[ -n "$token" ] || fail "unexpected answer to users.generatePersonalAccessToken: $made"

umask 077
mkdir -p "$OUT"
for name in admin-user-id admin-token; do
    case "$name" in
    admin-user-id) value=$user_id ;;
    *) value=$token ;;
    esac
    printf '%s\n' "$value" >"$OUT/.$name.tmp"
    chown "$OWNER" "$OUT/.$name.tmp"
    chmod 0400 "$OUT/.$name.tmp"
    mv -f "$OUT/.$name.tmp" "$OUT/$name"
done
# The login session was only needed to make the token.
as_admin logout '{}' >/dev/null 2>&1 || true
echo "rocketchat-bootstrap: wrote $OUT/admin-user-id and $OUT/admin-token for $ADMIN_USERNAME ($user_id)"
