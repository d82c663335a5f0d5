"""The fake Matrix Authentication Service behind the MAS contract server
(mas.py): its state (users, e-mails, tokens, compatibility sessions) and the
operations the module uses, following MAS v1.22.0's handlers. The admin API
operations are keyed by their OpenAPI operationId (OPERATIONS); the OAuth
token endpoint and the Matrix compatibility login and logout sit beside them.
The HTTP side (routing, contract checks, the request log) is mas_handler.py's."""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import threading
import time
import urllib.parse
import zlib
from datetime import datetime, timedelta, timezone

from zxcvbn_rs_py import zxcvbn

SERVER_NAME = "localhost"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALNUM = string.ascii_letters + string.digits
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
MINIMUM_COMPLEXITY = 3  # MAS default: passwords.minimum_complexity
TOKEN_TTL = 300  # MAS default: seconds an admin access token lives
# The only scopes the default MAS policy lets an admin client get by client_credentials.
CLIENT_CREDENTIALS_SCOPES = {"", "openid", "email", "urn:mas:graphql:*", "urn:mas:admin"}
INVALID_REQUEST = ("The request is missing a required parameter, includes an invalid parameter value, "
                   "includes a parameter more than once, or is otherwise malformed.")


# ---------------------------------------------------------------- small helpers

def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(dt):
    # chrono's serde format: fraction only when non-zero, in 3 or 6 digits.
    if dt is None:
        return None
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond == 0:
        return base + "Z"
    if dt.microsecond % 1000 == 0:
        return f"{base}.{dt.microsecond // 1000:03d}Z"
    return f"{base}.{dt.microsecond:06d}Z"


def new_ulid() -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def token_crc(base: str) -> str:
    crc, digits = zlib.crc32(base.encode()), ""
    while crc:  # MAS writes the base62 digits least significant first, then left-pads
        digits += BASE62[crc % 62]
        crc //= 62
    return digits.rjust(6, "0")


def new_token(prefix: str) -> str:
    base = f"{prefix}_{''.join(secrets.choice(ALNUM) for _ in range(30))}"
    return f"{base}_{token_crc(base)}"


def token_type(token: str) -> str:
    """MAS's TokenType::check; raises ValueError with MAS's message."""
    if token.startswith("syt_"):
        return "mct"
    parts = token.split("_")
    if len(parts) != 3 or [len(p) for p in parts] != [3, 30, 6]:
        raise ValueError("invalid token format")
    if parts[0] not in ("mat", "mar", "mct", "mcr"):
        raise ValueError(f"unknown token prefix {json.dumps(parts[0])}")
    expected = token_crc(f"{parts[0]}_{parts[1]}")
    if parts[2] != expected:
        raise ValueError(f"invalid crc {json.dumps(parts[2])}, expected {json.dumps(expected)}")
    return parts[0]


def hash_password(password: str, salt: bytes = None):
    salt = salt or secrets.token_bytes(16)
    return salt, hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000)


# email_address 0.2 (lettre's check): any character beyond ASCII is atext too.
EMAIL_USER = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+|\"(?:[^\"\\]|\\.)*\"", re.I)
EMAIL_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
EMAIL_DOMAIN = re.compile(rf"{EMAIL_LABEL}(?:\.{EMAIL_LABEL})*|\[[^\]]+\]", re.I)


def email_problem(address: str):
    """Approximates lettre::Address::from_str, which MAS uses; None when valid."""
    user, at, domain = address.rpartition("@")
    if not at:
        return "Missing domain or user"
    if not EMAIL_USER.fullmatch(user):
        return "Invalid input found in user part"
    try:
        ascii_domain = domain.encode("idna").decode() if domain else domain
    except UnicodeError:
        ascii_domain = domain
    if not EMAIL_DOMAIN.fullmatch(ascii_domain):
        return "Invalid input found in domain part"
    return None


def email_key(address: str) -> str:
    """What MAS compares of an address: LOWER(email) in its PostgreSQL
    (crates/storage-pg/src/user/email.rs), here as in a database of a
    Unicode LC_CTYPE, which lowercases each character alone (no word-final
    sigma, unlike str.lower). In the C locale (matrix-docker-ansible-deploy's)
    it lowercases ASCII only, which is the module's own rule: this server
    plays the MAS where the two differ and MAS's lookup must decide."""
    return "".join(c.lower() for c in address)


def username_valid(username: str) -> bool:
    # crates/handlers/src/admin/v1/users/add.rs
    allowed = set(string.ascii_lowercase + string.digits + "=_-./+")
    return 0 < len(username.encode()) <= 255 and not username.startswith("_") and set(username) <= allowed


class Limiter:
    """GCRA, as the governor crate behind MAS's rate limits."""

    def __init__(self, burst: int, per_second: float):
        self.burst, self.period, self.tat = burst, 1.0 / per_second, {}

    def allow(self, key) -> bool:
        t = time.monotonic()
        tat = max(self.tat.get(key, t), t) + self.period
        if tat - t > self.burst * self.period:
            return False
        self.tat[key] = tat
        return True


class ApiError(Exception):
    def __init__(self, status: int, body=None, content_type="application/json", headers=None):
        super().__init__(status)
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}


def errors(*titles) -> dict:
    return {"errors": [{"title": t} for t in titles]}


def matrix_error(status, errcode, error):
    return ApiError(status, {"errcode": errcode, "error": error})


def oauth_error(status, code, description):
    return ApiError(status, {"error": code, "error_description": description})


# ---------------------------------------------------------------- server state

class State:
    def __init__(self, args, data_dir):
        self.args = args
        # MAS requires ULIDs as client IDs in its config; a caller may give the client its configuration lists.
        self.client_id = args.client_id or new_ulid()
        if args.client_secret_file:
            with open(args.client_secret_file) as f:
                self.client_secret = f.read().strip()
        else:
            self.client_secret = secrets.token_urlsafe(24)
        self.users, self.emails, self.access_tokens, self.compat_sessions = {}, {}, {}, {}
        self.links, self.providers = {}, {}
        for name in args.upstream_provider:  # as MAS's configuration lists them under upstream_oauth2.providers
            provider = {"id": new_ulid(), "human_name": name, "created_at": now()}
            self.providers[provider["id"]] = provider
        self.personal_sessions = {}
        self.lock = threading.Lock()
        self.log_path = os.path.join(data_dir, "requests.jsonl")
        self.log_file = open(self.log_path, "a", buffering=1)
        if args.default_rate_limits:  # MAS's defaults for rate_limiting.login
            self.per_ip, self.per_account = Limiter(3, 3 / 60), Limiter(1800, 1800 / 3600)
        else:
            self.per_ip = self.per_account = Limiter(1000, 1000)

    def log(self, entry: dict):
        self.log_file.write(json.dumps(entry) + "\n")

    def find_username(self, username: str):
        # Case-insensitive, preferring an exact match (storage-pg find_by_username).
        found = [u for u in self.users.values() if u["username"].lower() == username.lower()]
        exact = [u for u in found if u["username"] == username]
        return found[0] if len(found) == 1 else (exact[0] if exact else None)

    def user(self, user_id: str):
        return find(self.users, user_id, f"User ID {user_id} not found")


def find(items, item_id, not_found):
    """The item with `item_id`, or MAS's 404 with the `not_found` text."""
    if item_id not in items:
        raise ApiError(404, errors(not_found))
    return items[item_id]


def resource(kind: str, collection: str, resource_id: str, attributes: dict, cursor: bool) -> dict:
    """One object as the admin API shows it: `kind` and ID, its attributes, its
    own link under /api/admin/v1/`collection`, and its cursor when in a page."""
    r = {"type": kind, "id": resource_id, "attributes": attributes,
         "links": {"self": f"/api/admin/v1/{collection}/{resource_id}"}}
    if cursor:
        r["meta"] = {"page": {"cursor": resource_id}}
    return r


def user_resource(u, cursor=False):
    attributes = {"username": u["username"], "created_at": rfc3339(u["created_at"]),
                  "locked_at": rfc3339(u["locked_at"]), "deactivated_at": rfc3339(u["deactivated_at"]),
                  "admin": u["admin"], "legacy_guest": False}
    return resource("user", "users", u["id"], attributes, cursor)


def email_resource(e, cursor=False):
    attributes = {"created_at": rfc3339(e["created_at"]), "user_id": e["user_id"], "email": e["email"]}
    return resource("user-email", "user-emails", e["id"], attributes, cursor)


def single(data, self_link=None):
    return {"data": data, "links": {"self": self_link or data["links"]["self"]}}


def paginate(items, query, base, to_resource):
    """MAS's Pagination extractor, Pagination::process and PaginatedResponse::for_page."""
    first, last = query.get("page[first]"), query.get("page[last]")
    if first and last:
        raise ApiError(400, errors("Invalid pagination parameters",
                                   "Cannot specify both `page[first]` and `page[last]` parameters"))
    include = (query.get("count") or ["true"])[0]
    if include != "true":
        base += ("&" if "?" in base else "?") + f"count={include}"
    if include == "only":
        return {"meta": {"count": len(items)}, "links": {"self": base}}
    forward = not last
    count = int((first or last or ["10"])[0])
    before, after = (query.get("page[before]") or [None])[0], (query.get("page[after]") or [None])[0]
    selected = sorted((i for i in items if (after is None or i["id"] > after) and (before is None or i["id"] < before)),
                      key=lambda i: i["id"])
    page = selected[:count + 1] if forward else selected[-(count + 1):]
    full = len(page) == count + 1
    if full:
        page = page[:count] if forward else page[1:]

    def link(before=None, after=None, forward=forward):
        path, _, q = base.partition("?")
        parts = ([q] if q else []) + ([f"page[before]={before}"] if before else []) + \
            ([f"page[after]={after}"] if after else []) + [f"page[{'first' if forward else 'last'}]={count}"]
        return f"{path}?{'&'.join(parts)}"

    links = {"self": link(before, after), "first": link(forward=True), "last": link(forward=False)}
    if forward and full:
        links["next"] = link(after=page[-1]["id"])
    if not forward and full:
        links["prev"] = link(before=page[0]["id"])
    response = {"meta": {"count": len(items)}} if include == "true" else {}
    response.update(data=[to_resource(i, cursor=True) for i in page], links=links)
    return response


# ---------------------------------------------------------------- admin API operations

def op_version(state, p, q, body):
    return 200, {"version": state.args.mas_version}


def version_at_least(version: str, major: int, minor: int) -> bool:
    """A version that is no release number is a build of MAS 1.22's code without git metadata
    (crates/cli/build.rs: vergen then reports VERGEN_IDEMPOTENT_OUTPUT)."""
    numbers = re.match(r"v?(\d+)\.(\d+)", version)
    return numbers is None or (int(numbers[1]), int(numbers[2])) >= (major, minor)


def op_site_config(state, p, q, body):
    # admin/v1/site_config.rs, with MAS's defaults (config sections passwords and account)
    # except password login, which --no-password-login turns off.
    return 200, {"server_name": SERVER_NAME, "password_login_enabled": not state.args.no_password_login,
                 "password_registration_enabled": False, "password_registration_email_required": True,
                 "password_registration_token_required": False, "registration_token_required": False,
                 "email_change_allowed": True, "displayname_change_allowed": True,
                 "password_change_allowed": True, "account_recovery_allowed": False,
                 "account_deactivation_allowed": False, "captcha_enabled": False,
                 "minimum_password_complexity": MINIMUM_COMPLEXITY}


def op_list_users(state, p, q, body):
    one = {k: v[0] for k, v in q.items()}
    users = list(state.users.values())
    filters = []
    if "filter[admin]" in one:
        filters.append(f"filter[admin]={one['filter[admin]']}")
        users = [u for u in users if u["admin"] == (one["filter[admin]"] == "true")]
    if "filter[legacy-guest]" in one:
        filters.append(f"filter[legacy-guest]={one['filter[legacy-guest]']}")
        users = [u for u in users if one["filter[legacy-guest]"] == "false"]
    if "filter[search]" in one:
        filters.append(f"filter[search]={one['filter[search]']}")
        users = [u for u in users if one["filter[search]"].lower() in u["username"].lower()]
    status = one.get("filter[status]")
    if status:
        filters.append(f"filter[status]={status}")
        keep = {"active": lambda u: u["locked_at"] is None and u["deactivated_at"] is None,
                "locked": lambda u: u["locked_at"] is not None,
                "deactivated": lambda u: u["deactivated_at"] is not None}[status]
        users = [u for u in users if keep(u)]
    for client in q.get("filter[active-oauth2-client]", []):
        if client != state.client_id:
            raise ApiError(404, errors(f"Client ID {client} not found"))
        filters.append(f"filter[active-oauth2-client]={client}")
        users = []  # client_credentials sessions have no user
    if "filter[has-active-oauth2-session]" in one:
        filters.append(f"filter[has-active-oauth2-session]={one['filter[has-active-oauth2-session]']}")
        users = [u for u in users if one["filter[has-active-oauth2-session]"] == "false"]
    if "filter[has-active-compat-session]" in one:
        wanted = one["filter[has-active-compat-session]"] == "true"
        filters.append(f"filter[has-active-compat-session]={one['filter[has-active-compat-session]']}")
        active = {s["user_id"] for s in state.compat_sessions.values() if not s["finished"]}
        users = [u for u in users if (u["id"] in active) == wanted]
    base = "/api/admin/v1/users" + ("?" + "&".join(filters) if filters else "")
    return 200, paginate(users, q, base, user_resource)


def op_create_user(state, p, q, body):
    username = body["username"]
    if any(u["username"].lower() == username.lower() for u in state.users.values()):
        raise ApiError(409, errors("User already exists"))
    if not username_valid(username):
        raise ApiError(400, errors("Username is not valid"))
    if username in state.args.reserve_username and not body.get("skip_homeserver_check", False):
        raise ApiError(409, errors("Username is reserved by the homeserver"))
    user = {"id": new_ulid(), "username": username, "created_at": now(), "locked_at": None,
            "deactivated_at": None, "admin": False, "password": None,
            # What MAS hands the homeserver when it provisions the user: the display
            # name since MAS 1.18 (older versions ignore the field, as serde does).
            "displayname": body.get("displayname") if version_at_least(state.args.mas_version, 1, 18) else None}
    state.users[user["id"]] = user
    return 201, single(user_resource(user))


def op_get_user(state, p, q, body):
    return 200, single(user_resource(state.user(p["id"])))


def op_get_user_by_username(state, p, q, body):
    user = state.find_username(p["username"])
    if user is None:
        raise ApiError(404, errors(f"User with username {json.dumps(p['username'], ensure_ascii=False)} not found"))
    return 200, single(user_resource(user), f"/api/admin/v1/users/by-username/{p['username']}")


def op_set_password(state, p, q, body):
    if state.args.no_password_login:
        raise ApiError(403, errors("Password auth is disabled"))
    user = state.user(p["id"])
    if not body.get("skip_password_check") and int(zxcvbn(body["password"]).score) < MINIMUM_COMPLEXITY:
        raise ApiError(400, errors("Password is too weak"))
    user["password"] = hash_password(body["password"])
    return 204, None


def user_action(action):
    def op(state, p, q, body):
        user = state.user(p["id"])
        if action == "set-admin":
            user["admin"] = body["admin"]
        elif action == "lock" and user["locked_at"] is None:
            user["locked_at"] = now()
        elif action == "unlock":
            user["locked_at"] = None
        elif action == "deactivate" and user["deactivated_at"] is None:
            # Since MAS PR #4768 the handler deactivates at once (without locking);
            # the queued job ends the sessions, which happens here right away.
            user["deactivated_at"] = now()
            for session in state.compat_sessions.values():
                if session["user_id"] == user["id"]:
                    session["finished"] = True
        elif action == "reactivate":
            user["deactivated_at"] = None
        return 200, single(user_resource(user), f"/api/admin/v1/users/{user['id']}/{action}")
    return op


def of_filtered_user(state, one: dict, filters: list, items: list) -> list:
    """The `items` of the user `filter[user]` names (MAS's 404 for an unknown
    user), that filter added to `filters`; all of them without it."""
    if "filter[user]" not in one:
        return items
    state.user(one["filter[user]"])
    filters.append(f"filter[user]={one['filter[user]']}")
    return [item for item in items if item["user_id"] == one["filter[user]"]]


def op_list_emails(state, p, q, body):
    one = {k: v[0] for k, v in q.items()}
    filters = []
    emails = of_filtered_user(state, one, filters, list(state.emails.values()))
    if "filter[email]" in one:
        filters.append(f"filter[email]={one['filter[email]']}")
        emails = [e for e in emails if email_key(e["email"]) == email_key(one["filter[email]"])]
    base = "/api/admin/v1/user-emails" + ("?" + "&".join(filters) if filters else "")
    return 200, paginate(emails, q, base, email_resource)


def op_add_email(state, p, q, body):
    user = state.user(body["user_id"])
    problem = email_problem(body["email"])
    if problem:
        raise ApiError(400, errors(f"Email {json.dumps(body['email'], ensure_ascii=False)} is not valid", problem))
    if any(email_key(e["email"]) == email_key(body["email"]) for e in state.emails.values()):
        raise ApiError(409, errors(f"User email {json.dumps(body['email'], ensure_ascii=False)} already in use"))
    email = {"id": new_ulid(), "user_id": user["id"], "email": body["email"], "created_at": now()}
    state.emails[email["id"]] = email
    return 201, single(email_resource(email))


def provider_resource(pr, cursor=False):
    attributes = {"issuer": f"https://{pr['id'].lower()}.sso.invalid", "human_name": pr["human_name"],
                  "brand_name": None, "created_at": rfc3339(pr["created_at"]), "disabled_at": None,
                  "registration_token_required": False}
    return resource("upstream-oauth-provider", "upstream-oauth-providers", pr["id"], attributes, cursor)


def link_resource(link, cursor=False):
    attributes = {"created_at": rfc3339(link["created_at"]), "provider_id": link["provider_id"],
                  "subject": link["subject"], "user_id": link["user_id"],
                  "human_account_name": link["human_account_name"]}
    return resource("upstream-oauth-link", "upstream-oauth-links", link["id"], attributes, cursor)


def op_list_providers(state, p, q, body):
    one = {k: v[0] for k, v in q.items()}
    providers, filters = list(state.providers.values()), []
    if "filter[enabled]" in one:  # every provider here is enabled
        filters.append(f"filter[enabled]={one['filter[enabled]']}")
        providers = providers if one["filter[enabled]"] == "true" else []
    base = "/api/admin/v1/upstream-oauth-providers" + ("?" + "&".join(filters) if filters else "")
    return 200, paginate(providers, q, base, provider_resource)


def find_provider(state, provider_id):
    return find(state.providers, provider_id, f"Upstream OAuth 2.0 Provider ID {provider_id} not found")


def op_list_links(state, p, q, body):
    one = {k: v[0] for k, v in q.items()}
    filters = []
    links = of_filtered_user(state, one, filters, list(state.links.values()))
    if "filter[provider]" in one:
        find_provider(state, one["filter[provider]"])
        filters.append(f"filter[provider]={one['filter[provider]']}")
        links = [link for link in links if link["provider_id"] == one["filter[provider]"]]
    if "filter[subject]" in one:
        filters.append(f"filter[subject]={one['filter[subject]']}")
        links = [link for link in links if link["subject"] == one["filter[subject]"]]
    if "filter[human-account-name]" in one:
        wanted = one["filter[human-account-name]"].lower()
        filters.append(f"filter[human-account-name]={one['filter[human-account-name]']}")
        links = [link for link in links if wanted in (link["human_account_name"] or "").lower()]
    base = "/api/admin/v1/upstream-oauth-links" + ("?" + "&".join(filters) if filters else "")
    return 200, paginate(links, q, base, link_resource)


def op_add_link(state, p, q, body):
    """As the 1.22 spec describes it: an existing link of that provider and subject
    is associated (200) unless another user has it (409); else a new one (201)."""
    user = state.user(body["user_id"])
    provider = find_provider(state, body["provider_id"])
    existing = [link for link in state.links.values()
                if link["provider_id"] == provider["id"] and link["subject"] == body["subject"]]
    if existing and existing[0]["user_id"] not in (None, user["id"]):
        raise ApiError(409, errors(f"Upstream Oauth 2.0 Provider ID {provider['id']} with subject "
                                   f"{body['subject']} is already linked to a user"))
    if existing:
        existing[0]["user_id"] = user["id"]
        return 200, single(link_resource(existing[0]))
    link = {"id": new_ulid(), "created_at": now(), "provider_id": provider["id"], "subject": body["subject"],
            "user_id": user["id"], "human_account_name": body.get("human_account_name")}
    state.links[link["id"]] = link
    return 201, single(link_resource(link))


def get_and_delete(collection: str, not_found: str, resource):
    """The get and delete operations of one kind of object, kept in the
    state's `collection` (a dict by ID); `not_found` is MAS's 404 message,
    with `{id}` for the ID asked."""
    def found(state, object_id):
        return find(getattr(state, collection), object_id, not_found.format(id=object_id))

    def op_get(state, p, q, body):
        return 200, single(resource(found(state, p["id"])))

    def op_delete(state, p, q, body):
        del getattr(state, collection)[found(state, p["id"])["id"]]
        return 204, None

    return op_get, op_delete


op_get_email, op_delete_email = get_and_delete("emails", "User email ID {id} not found", email_resource)
op_get_link, op_delete_link = get_and_delete("links", "Upstream OAuth 2.0 Link ID {id} not found", link_resource)


OPERATIONS = {
    "siteConfig": op_site_config, "version": op_version, "listUsers": op_list_users, "createUser": op_create_user, "getUser": op_get_user,
    "getUserByUsername": op_get_user_by_username, "setUserPassword": op_set_password,
    "userSetAdmin": user_action("set-admin"), "deactivateUser": user_action("deactivate"),
    "reactivateUser": user_action("reactivate"), "lockUser": user_action("lock"),
    "unlockUser": user_action("unlock"), "listUserEmails": op_list_emails, "addUserEmail": op_add_email,
    "getUserEmail": op_get_email, "deleteUserEmail": op_delete_email,
    "listUpstreamOAuthProviders": op_list_providers, "listUpstreamOAuthLinks": op_list_links,
    "addUpstreamOAuthLink": op_add_link, "getUpstreamOAuthLink": op_get_link,
    "deleteUpstreamOAuthLink": op_delete_link,
}


# ---------------------------------------------------------------- personal sessions (admin/v1/personal_sessions)
# Created by the admin client (client_credentials), so owned by that client. Tokens are `mpt_` ones.

def personal_session_resource(s, cursor=False):
    attributes = {"created_at": rfc3339(s["created_at"]), "revoked_at": rfc3339(s["revoked_at"]),
                  "owner_user_id": None, "owner_client_id": s["owner_client_id"],
                  "actor_user_id": s["actor_user_id"], "human_name": s["human_name"], "scope": s["scope"],
                  "last_active_at": None, "last_active_ip": None, "expires_at": rfc3339(s["expires_at"])}
    return resource("personal-session", "personal-sessions", s["id"], attributes, cursor)


def personal_session(state, session_id):
    return find(state.personal_sessions, session_id, f"Personal session with ID {session_id} not found")


def issue_personal_token(session, expires_in):
    """A new token; the answer that carries it is the only one that shows it."""
    session["expires_at"] = None if expires_in is None else now() + timedelta(seconds=expires_in)
    resource = personal_session_resource(session)
    resource["attributes"]["access_token"] = new_token("mpt")
    return 201, single(resource)


def op_create_personal_session(state, p, q, body):
    if any(not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s) for s in body["scope"].split(" ")):
        raise ApiError(400, errors("Invalid scope"))
    if body["actor_user_id"] not in state.users:
        raise ApiError(404, errors("User not found"))
    session = {"id": new_ulid(), "created_at": now(), "revoked_at": None, "owner_client_id": state.client_id,
               "actor_user_id": body["actor_user_id"], "human_name": body["human_name"], "scope": body["scope"]}
    state.personal_sessions[session["id"]] = session
    return issue_personal_token(session, body.get("expires_in"))


def op_get_personal_session(state, p, q, body):
    return 200, single(personal_session_resource(personal_session(state, p["id"])))


def op_revoke_personal_session(state, p, q, body):
    session = personal_session(state, p["id"])
    if session["revoked_at"] is not None:
        raise ApiError(409, errors(f"Personal session with ID {p['id']} is already revoked"))
    session["revoked_at"], session["expires_at"] = now(), None
    return 200, single(personal_session_resource(session))


def op_regenerate_personal_session(state, p, q, body):
    session = personal_session(state, p["id"])
    if session["revoked_at"] is not None:  # the spec documents no answer for it; matrix_user never asks
        raise ApiError(400, errors(f"Personal session with ID {p['id']} is revoked"))
    return issue_personal_token(session, body.get("expires_in"))


OPERATIONS.update({
    "createPersonalSession": op_create_personal_session, "getPersonalSession": op_get_personal_session,
    "revokePersonalSession": op_revoke_personal_session, "regeneratePersonalSession": op_regenerate_personal_session,
})


# ---------------------------------------------------------------- OAuth and compatibility endpoints

def authenticate_admin(state, header):
    """MAS's admin CallContext extractor."""
    if header is None:
        raise ApiError(400, errors("Missing authorization header"))
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise ApiError(400, errors("Invalid authorization header"))
    token = header[7:].strip()
    try:
        kind = token_type(token)
    except ValueError as e:
        raise ApiError(401, errors("Invalid type of access token", str(e)))
    if kind != "mat":
        raise ApiError(401, errors("Invalid type of access token"))
    grant = state.access_tokens.get(token)
    if grant is None:
        raise ApiError(401, errors("Unknown access token"))
    if grant["expires_at"] < time.time() or grant["uses_left"] == 0:
        raise ApiError(401, errors("Access token expired"))
    grant["uses_left"] -= 1
    if "urn:mas:admin" not in grant["scope"]:
        raise ApiError(401, errors("Missing urn:mas:admin scope"))


def oauth_token(state, header, content_type, raw):
    """POST /oauth2/token, client_credentials only (oauth2/token.rs, axum-utils client_authorization.rs)."""
    basic = None
    bearer = header is not None and header[:7].lower() == "bearer "
    if header is not None and not bearer:
        try:
            if header[:6].lower() != "basic ":
                raise ValueError("not Basic")
            basic = tuple(base64.b64decode(header[6:].strip(), validate=True).decode().split(":", 1))
            if len(basic) != 2:
                raise ValueError("no colon")
        except ValueError:
            raise oauth_error(400, "invalid_request", "Invalid Authorization header")
    form = None
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        form = {}
        for k, v in urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            if k in form:
                raise oauth_error(400, "invalid_request", f"Failed to deserialize form: duplicate field `{k}`")
            form[k] = v
        if "grant_type" not in form:
            raise oauth_error(400, "invalid_request", "Failed to deserialize form: missing field `grant_type`")
        if any(not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s) for s in form.get("scope", "").split(" ") if s):
            raise oauth_error(400, "invalid_request", "Failed to deserialize form: invalid scope")
    form_id, form_secret = (form or {}).get("client_id"), (form or {}).get("client_secret")
    if bearer:  # MAS finds no client for bearer credentials
        raise oauth_error(401, "invalid_client", "Client authentication failed.")
    if basic and form_secret is None:
        if form_id is not None and form_id != basic[0]:
            raise oauth_error(400, "invalid_grant", f"client_id in form ({json.dumps(form_id)}) does not match "
                              f"credential ({json.dumps(basic[0])})")
        method, client_id, secret = "client_secret_basic", basic[0], basic[1]
    elif not basic and form_id is not None:
        method = "client_secret_post" if form_secret is not None else "none"
        client_id, secret = form_id, form_secret
    elif not basic:
        raise oauth_error(400, "invalid_request", "No credentials were presented")
    else:
        raise oauth_error(400, "invalid_request", INVALID_REQUEST)
    if client_id != state.client_id or method != state.args.client_auth_method or \
            not hmac.compare_digest(secret.encode(), state.client_secret.encode()):
        raise oauth_error(401, "invalid_client", "Client authentication failed.")
    if form is None:
        raise oauth_error(400, "invalid_request", INVALID_REQUEST)
    if form["grant_type"] != "client_credentials":
        raise oauth_error(400, "unsupported_grant_type",
                          "The authorization grant type is not supported by the authorization server.")
    scope = {s for s in form.get("scope", "").split(" ") if s}
    allowed = CLIENT_CREDENTIALS_SCOPES - ({"urn:mas:admin"} if state.args.not_admin_client else set())
    denied = [f"scope '{s}' not allowed" for s in sorted(scope or {""}) if s not in allowed]
    if denied:
        raise oauth_error(403, "invalid_scope", ", ".join(denied))
    token = new_token("mat")
    # MAS's default lifetime; --token-uses ends a token sooner, after a number
    # of requests rather than seconds, so that tests do not depend on the machine's speed.
    state.access_tokens[token] = {"expires_at": time.time() + TOKEN_TTL, "scope": scope,
                                  "uses_left": state.args.token_uses}
    reply = {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL}
    if scope:
        reply["scope"] = " ".join(sorted(scope))
    return reply


def compat_login_flows(state):
    flows = [{"type": "m.login.sso", "org.matrix.msc3824.delegated_oidc_compatibility": True},
             {"type": "m.login.token"}]
    return {"flows": ([{"type": "m.login.password"}] if not state.args.no_password_login else []) + flows}


def compat_login(state, raw, client_ip):
    """POST /_matrix/client/v3/login, m.login.password only (compat/login.rs)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise matrix_error(400, "M_NOT_JSON", "Body is not a valid JSON document")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise matrix_error(400, "M_BAD_JSON", "JSON fields are not valid")
    if body["type"] != "m.login.password" or state.args.no_password_login:
        raise matrix_error(400, "M_UNKNOWN", "Invalid login type")
    identifier, user, password = body.get("identifier"), body.get("user"), body.get("password")
    bad_identifier = identifier is not None and not (
        isinstance(identifier, dict) and isinstance(identifier.get("type"), str))
    if not isinstance(password, str) or (user is not None and not isinstance(user, str)) or bad_identifier:
        raise matrix_error(400, "M_BAD_JSON", "JSON fields are not valid")
    if user is None:
        if identifier is None:
            raise matrix_error(400, "M_BAD_JSON", "Missing property 'identifier")
        if identifier["type"] != "m.id.user":
            raise matrix_error(400, "M_UNKNOWN", "Unsupported login identifier")
        user = identifier.get("user")
        if not isinstance(user, str):
            raise matrix_error(400, "M_BAD_JSON", "JSON fields are not valid")
    if user.startswith("@") and user.endswith(":" + SERVER_NAME):
        user = user[1:-len(":" + SERVER_NAME)]
    account = state.find_username(user)
    if account is None or account["deactivated_at"] is not None:
        raise matrix_error(403, "M_FORBIDDEN", "Invalid username/password")
    if account["locked_at"] is not None:
        raise matrix_error(401, "M_USER_LOCKED", "User account has been locked")
    if not (state.per_ip.allow(client_ip) and state.per_account.allow(account["id"])):
        raise matrix_error(429, "M_LIMIT_EXCEEDED", "Too many login attempts")
    if account["password"] is None or not hmac.compare_digest(
            hash_password(password, account["password"][0])[1], account["password"][1]):
        raise matrix_error(403, "M_FORBIDDEN", "Invalid username/password")
    device = body.get("device_id") if isinstance(body.get("device_id"), str) else \
        "".join(secrets.choice(ALNUM) for _ in range(10))
    token = new_token("mct")
    state.compat_sessions[token] = {"user_id": account["id"], "device_id": device, "finished": False}
    return {"access_token": token, "device_id": device, "user_id": f"@{account['username']}:{SERVER_NAME}"}


def homeserver_profile(state, user_id):
    """GET /_matrix/client/v3/profile/{userId}: the homeserver's profile of a user
    MAS provisioned, which the contract server stands in for (its default display
    name is the localpart, as Synapse's)."""
    localpart = user_id[1:].rsplit(":" + SERVER_NAME, 1)[0] if user_id.endswith(":" + SERVER_NAME) else None
    account = state.find_username(localpart) if localpart and user_id.startswith("@") else None
    if account is None:
        raise matrix_error(404, "M_NOT_FOUND", "Profile was not found")
    return {"displayname": account["displayname"] or account["username"]}


def compat_logout(state, header):
    """POST /_matrix/client/v3/logout (compat/logout.rs)."""
    if header is None or header[:7].lower() != "bearer ":
        raise matrix_error(401, "M_MISSING_TOKEN", "Missing access token")
    session = state.compat_sessions.get(header[7:].strip())
    if session is None or session["finished"]:
        raise matrix_error(401, "M_UNKNOWN_TOKEN", "Invalid access token")
    session["finished"] = True
    return {}
