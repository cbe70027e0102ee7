"""The processes bench/run measures: the upstream, Redis, authgate, and the peers (plain nginx,
nginx + Lua, nginx `auth_request` to a separate auth server), each on its own loopback port, with
the pids whose CPU and memory count as its own. Also the check each gateway passes before it is
measured: the real session reaches the upstream with the identity headers, a wrong token is
refused with 401.

The nginx configurations of the Lua peers are the `*.conf` files beside this one (their
`@@…@@` fields filled in here); their session check is `authgate_session.lua`.
"""

import http.client
import os
import re
import socket
import subprocess
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
BODY = '{"success":true,"status":"ok","message":"hello from the upstream","padding":"0123456789abcdef0123"}'
# authgate's default `session.key_prefix`: the Lua peers read the keys authgate writes under it.
KEY_PREFIX = "authgate:"
# An upstream path that answers with the identity headers it received, for the checks (a path
# authgate treats as protected, like every path it has no rule for).
IDENTITY_PATH = "/api/v1/bench.identity"
LUA_MODULES = """load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, within=20.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError):
                pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime (all threads)
    return total


def status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Service:
    """A process we started, with the pids whose CPU counts as its own."""

    def __init__(self, tmp, name, argv, port):
        self.name, self.port = name, port
        self.log = open(Path(tmp) / f"{name}.log", "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, text=True)
        try:
            wait_port(port, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{name} did not start ({e}); see {self.log.name}") from e
        time.sleep(0.1)
        self.pids = [self.proc.pid] + children(self.proc.pid)

    def cpu(self):
        return cpu_ticks(self.pids)

    def rss_kb(self):
        return sum(status_kb(p, "VmRSS") for p in self.pids)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Group:
    """Several services measured as one gateway (the auth_request front and its auth server):
    requests go to the first; CPU and memory are the sum of all."""

    def __init__(self, name, members):
        self.name, self.members, self.port = name, members, members[0].port
        self.pids = [p for m in members for p in m.pids]

    def cpu(self):
        return cpu_ticks(self.pids)

    def rss_kb(self):
        return sum(status_kb(p, "VmRSS") for p in self.pids)


def nginx_argv(nginx, tmp, name, port, workers, body, lua=False):
    d = Path(tmp) / name
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(
        f"""user root;
{LUA_MODULES if lua else ""}worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
{body}
}}
"""
    )
    return [nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log"), "-g", "daemon off;"]


def peer_conf(template, **fields):
    """A `*.conf` template beside this file with its `@@…@@` fields filled in."""
    text = (PEERS / template).read_text()
    for key, value in {"LUA_DIR": PEERS, "PREFIX": KEY_PREFIX, **fields}.items():
        text = text.replace(f"@@{key}@@", str(value))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise RuntimeError(f"{template}: {', '.join(left)} left unfilled")
    return text


def start_upstream(nginx, tmp):
    port = free_port()
    body = f"""  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {IDENTITY_PATH} {{ default_type text/plain; return 200 "$http_x_user_id\\n$http_x_auth_token\\n"; }}
    location / {{ default_type application/json; return 200 '{BODY}'; }}
  }}"""
    return Service(tmp, "upstream", nginx_argv(nginx, tmp, "upstream", port, 1, body), port)


def start_nginx_proxy(nginx, tmp, upstream_port, workers):
    port = free_port()
    body = f"""  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 512;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
    return Service(tmp, "nginx", nginx_argv(nginx, tmp, "nginx", port, workers, body), port)


def start_lua_inline(nginx, tmp, upstream_port, redis_port, workers):
    port = free_port()
    body = peer_conf("lua-inline.conf", PORT=port, UPSTREAM_PORT=upstream_port, REDIS_PORT=redis_port)
    return Service(tmp, "nginx-lua", nginx_argv(nginx, tmp, "nginx-lua", port, workers, body, lua=True), port)


def start_auth_request(nginx, tmp, upstream_port, redis_port, workers):
    """The front nginx and its one-worker auth server: (the pair as one Group, both services)."""
    auth_port, port = free_port(), free_port()
    auth_body = peer_conf("auth-server.conf", PORT=auth_port, REDIS_PORT=redis_port)
    auth = Service(tmp, "auth-server", nginx_argv(nginx, tmp, "auth-server", auth_port, 1, auth_body, lua=True),
                   auth_port)
    front_body = peer_conf("auth-request.conf", PORT=port, AUTH_PORT=auth_port, UPSTREAM_PORT=upstream_port)
    front = Service(tmp, "auth-request", nginx_argv(nginx, tmp, "auth-request", port, workers, front_body), port)
    return Group("auth_request", [front, auth]), [auth, front]


def start_redis(redis, tmp):
    port = free_port()
    d = Path(tmp) / "redis"
    d.mkdir()
    argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)]
    return Service(tmp, "redis", argv, port)


def start_authgate(binary, tmp, name, redis_port, upstream_port, workers, users_file, hash_threads):
    port = free_port()
    conf = Path(tmp) / f"{name}.toml"
    conf.write_text(
        f"""[server]
listen = "127.0.0.1:{port}"
worker_threads = {workers}
password_hash_concurrency = {hash_threads}
# A dedicated edge instance: hashing gets only CPU the proxied requests leave (bench/NOTES.md).
password_hash_priority = "idle"
max_connections = 10000

[upstream]
url = "http://127.0.0.1:{upstream_port}"
pool_max_idle_per_host = 512

[session]
store = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "{KEY_PREFIX}"

[directory.local]
users_file = "{users_file}"

[regulation]
ip_failures = 0

[totp]
secrets_file = "{tmp}/totp-secrets.json"

[log]
level = "warn"
"""
    )
    return Service(tmp, name, [binary, "serve", "--config", str(conf)], port)


def get(port, path, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def check_gateway(name, port, user_id, token, authenticates=True):
    """Refuses to measure a gateway that would not do the job: the real session must reach the
    upstream (200) carrying the identity headers; a wrong token must get 401. A gateway that
    authenticates nothing (plain nginx) only has to reach the upstream."""
    real = {"X-User-Id": user_id, "X-Auth-Token": token}
    status, data = get(port, IDENTITY_PATH, real)
    seen = data.decode(errors="replace").split("\n")
    if status != 200:
        raise RuntimeError(f"{name}: the real session got {status} {data[:200]!r}, not 200")
    if authenticates and (len(seen) < 2 or seen[0] != user_id or not seen[1]):
        raise RuntimeError(f"{name}: the upstream saw X-User-Id/X-Auth-Token {seen[:2]!r}, "
                           f"not the session's user {user_id!r} with a token")
    if not authenticates:
        return
    for label, headers in (("a wrong token", {**real, "X-Auth-Token": "wrong" + token}),
                           ("another user's id", {**real, "X-User-Id": user_id + "x"}),
                           ("no credentials", {})):
        status, data = get(port, IDENTITY_PATH, headers)
        if status != 401:
            raise RuntimeError(f"{name}: {label} got {status} {data[:200]!r}, not 401")
