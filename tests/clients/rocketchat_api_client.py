"""An unmodified Rocket.Chat SDK client (PyPI `rocketchat_API`) against authgate.

Usage: rocketchat_api_client.py BASE_URL USERNAME EMAIL PASSWORD
Exits non-zero (with a reason) on any deviation from what the client expects.
"""
import sys

from rocketchat_API.rocketchat import RocketChat
from rocketchat_API.APIExceptions.RocketExceptions import RocketAuthenticationException

base, username, email, password = sys.argv[1:5]

for login in (username, email):
    rc = RocketChat(login, password, server_url=base)
    me = rc.me()
    me = me.json() if hasattr(me, "json") else me  # older releases return the Response
    assert me.get("success") is True, me
    assert me["path"] in ("/api/v1/me?", "/api/v1/me"), me
    creds = {k: v for k, v in rc.headers.items() if k.lower() in ("x-auth-token", "x-user-id")}
    assert len(creds) == 2, rc.headers
    rc.logout()
    # After logout the old credentials no longer work.
    after = rc.session.get(f"{base}/api/v1/me", headers=creds)
    assert after.status_code == 401, after.status_code

try:
    RocketChat(username, password + "-wrong", server_url=base)
    raise SystemExit("a wrong password logged in")
except RocketAuthenticationException:
    pass

print("rocketchat_API client OK")
