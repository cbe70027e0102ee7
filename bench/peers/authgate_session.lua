-- The session check of the nginx + Lua peers in bench/run: what an OpenResty-style gateway would
-- do to accept authgate's sessions. It reads the very Redis key authgate's login wrote,
--   <prefix>{u:<X-User-Id>}:session:<base64(sha256(X-Auth-Token))>
-- (src/session/redis_store.rs, src/session/token.rs), accepts the session while its
-- `expires_ms` lies ahead, and keeps the answer for 5 s in a per-worker LRU cache in front of a
-- keep-alive Redis pool. It does less than authgate: no path canonicalisation, no framing guard,
-- no header stripping, no request id, and a logout is honoured only once the cached entry expires.
--
-- Debian's packages: `nginx.redis` is lua-nginx-redis (resty.redis under another name),
-- `resty.lrucache` is lua-resty-lrucache. lua-resty-string (resty.sha256) is not packaged in
-- Debian 12, so sha256 is OpenSSL's, through the FFI, as resty.sha256 itself does it.

local ffi = require "ffi"
local redis = require "nginx.redis"
local lrucache = require "resty.lrucache"

ffi.cdef [[
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]

local _M = {}

local CACHE_SECONDS = 5
local REDIS_TIMEOUT_MS = 1000
local POOL_IDLE_MS = 60000
local POOL_SIZE = 64

local settings = { host = "127.0.0.1", port = 6379, prefix = "authgate:" }
local cache
local digest = ffi.new("unsigned char[32]")

-- `opts`: redis_host, redis_port, prefix (authgate's `session.key_prefix`), cache_size.
function _M.configure(opts)
    settings.host = opts.redis_host or settings.host
    settings.port = opts.redis_port or settings.port
    settings.prefix = opts.prefix or settings.prefix
    cache = assert(lrucache.new(opts.cache_size or 10000))
end

local function token_hash(token)
    ffi.C.SHA256(token, #token, digest)
    return ngx.encode_base64(ffi.string(digest, 32))
end

-- The session's expiry (unix ms) from Redis, false when there is none, nil and an error when
-- Redis could not answer.
local function read_expiry(user_id, hash)
    local red = redis:new()
    red:set_timeout(REDIS_TIMEOUT_MS)
    local ok, err = red:connect(settings.host, settings.port)
    if not ok then
        return nil, err
    end
    local value
    value, err = red:get(settings.prefix .. "{u:" .. user_id .. "}:session:" .. hash)
    if err then
        red:close()
        return nil, err
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
    if value == ngx.null then
        return false
    end
    -- authgate writes the session as JSON; only its expiry matters here, read with a pattern
    -- so the peer needs no JSON library beyond the packages bench/run already asks for.
    local expires = value:match('"expires_ms":(%d+)')
    return expires and tonumber(expires) or false
end

-- The user id of a live session named by the request's X-User-Id / X-Auth-Token, or nil and the
-- HTTP status to refuse with (401 for no or a dead session, 503 when Redis cannot say).
function _M.authenticate()
    local user_id, token = ngx.var.http_x_user_id, ngx.var.http_x_auth_token
    if not user_id or not token or user_id == "" or token == "" then
        return nil, ngx.HTTP_UNAUTHORIZED
    end
    local hash = token_hash(token)
    local cache_key = user_id .. "\0" .. hash
    local now_ms = ngx.now() * 1000
    local expires = cache:get(cache_key)
    if not expires then
        local err
        expires, err = read_expiry(user_id, hash)
        if expires == nil then
            ngx.log(ngx.ERR, "session store unavailable: ", err)
            return nil, ngx.HTTP_SERVICE_UNAVAILABLE
        end
        if expires then
            cache:set(cache_key, expires, CACHE_SECONDS)
        end
    end
    if not expires or expires <= now_ms then
        return nil, ngx.HTTP_UNAUTHORIZED
    end
    return user_id, token
end

-- access_by_lua for the inline peer: refuses, or sets the identity headers the upstream reads.
function _M.gate()
    local user_id, token_or_status = _M.authenticate()
    if not user_id then
        return ngx.exit(token_or_status)
    end
    ngx.req.set_header("X-User-Id", user_id)
    ngx.req.set_header("X-Auth-Token", token_or_status)
end

-- content_by_lua for the auth server of the auth_request peer: an empty 200 naming the user, or
-- an empty refusal. The explicit `Content-Length: 0` lets nginx keep the connection.
function _M.answer()
    local user_id, token_or_status = _M.authenticate()
    if user_id then
        ngx.status = ngx.HTTP_OK
        ngx.header["X-Authenticated-User"] = user_id
        ngx.header["X-Authenticated-Token"] = token_or_status
    else
        ngx.status = token_or_status
    end
    ngx.header["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
end

return _M
