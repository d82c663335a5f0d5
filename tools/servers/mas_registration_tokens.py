"""User registration tokens in the MAS contract server (mas.py): the six
admin API operations of MAS v1.22.0 (crates/handlers/src/admin/v1/
user_registration_tokens/), the site configuration's registration flags, and
a stand-in for the one thing MAS's web UI does with a token: count a use when
a registration that needed it finishes.

Refusals come in the order of MAS's handlers: after the request has passed
the contract (mas_handler.py), `add` answers 409 for a token string that
exists before anything else, `revoke`/`unrevoke` answer 404 for an unknown ID
before 400 for a token that already is (or is not) revoked, and `update`
answers 404 before changing anything. MAS checks nothing else: it accepts any
token string (even an empty one), an expiry in the past, and a usage limit
below the uses already made."""

import json
import re
import secrets
from datetime import datetime, timezone

from mas_api import ALNUM, ApiError, errors, new_ulid, now, op_site_config, paginate, rfc3339, single

PATH = "/api/admin/v1/user-registration-tokens"
# Not MAS's: where a test stands in for a registration finishing in MAS's web UI.
WEB_REGISTRATION_PATH = "/_contract/register-with-token"
# MAS stores usage_limit in an INTEGER column: beyond it the insert or update fails (500).
I32_MAX = 2**31 - 1


def tokens(state) -> dict:
    """The server's registration tokens by ID, kept on its state."""
    if not hasattr(state, "registration_tokens"):
        state.registration_tokens = {}
    return state.registration_tokens


RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def parse_time(value):
    """chrono's DateTime<Utc> from an RFC 3339 string, as serde reads it inside axum's
    Json extractor (a string that is none: 422); PostgreSQL keeps microseconds."""
    if value is None:
        return None
    if not RFC3339.fullmatch(value):
        raise ApiError(422, "Failed to deserialize the JSON body into the target type: expires_at: "
                            "input contains invalid characters", "text/plain")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z").replace("Z", "+00:00"))
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def is_valid(token, at) -> bool:
    """mas_data_model::UserRegistrationToken::is_valid (crates/data-model/src/users.rs)."""
    if token["revoked_at"] is not None:
        return False
    if token["expires_at"] is not None and at >= token["expires_at"]:
        return False
    return token["usage_limit"] is None or token["times_used"] < token["usage_limit"]


def resource(token, cursor=False):
    """crates/handlers/src/admin/model.rs UserRegistrationToken; its KIND is spelled so in MAS."""
    r = {"type": "user-registration_token", "id": token["id"],
         "attributes": {"token": token["token"], "valid": is_valid(token, now()),
                        "usage_limit": token["usage_limit"], "times_used": token["times_used"],
                        "created_at": rfc3339(token["created_at"]), "last_used_at": rfc3339(token["last_used_at"]),
                        "expires_at": rfc3339(token["expires_at"]), "revoked_at": rfc3339(token["revoked_at"])},
         "links": {"self": f"{PATH}/{token['id']}"}}
    if cursor:
        r["meta"] = {"page": {"cursor": token["id"]}}
    return r


def find_token(state, token_id):
    if token_id not in tokens(state):
        raise ApiError(404, errors(f"Registration token with ID {token_id} not found"))
    return tokens(state)[token_id]


def usage_limit_storable(limit):
    if limit is not None and limit > I32_MAX:
        raise ApiError(500, errors("Invalid database operation"))
    return limit


def op_add(state, p, q, body):
    expires_at = parse_time(body.get("expires_at"))  # axum's Json extractor runs before the handler
    value = body.get("token")
    if value is None:
        value = "".join(secrets.choice(ALNUM) for _ in range(12))
    if any(t["token"] == value for t in tokens(state).values()):
        raise ApiError(409, errors("A registration token with the same token already exists"))
    token = {"id": new_ulid(), "token": value, "usage_limit": usage_limit_storable(body.get("usage_limit")),
             "times_used": 0, "created_at": now(), "last_used_at": None,
             "expires_at": expires_at, "revoked_at": None}
    tokens(state)[token["id"]] = token
    return 201, single(resource(token))


def filtered(items, query, at):
    """MAS's UserRegistrationTokenFilter (crates/storage-pg/src/user/registration_token.rs),
    and the filter part of the links, in FilterParams' Display order."""
    one = {k: v[0] == "true" for k, v in query.items() if k.startswith("filter[")}
    conditions = {
        "used": lambda t: t["times_used"] > 0,
        "revoked": lambda t: t["revoked_at"] is not None,
        "expired": lambda t: t["expires_at"] is not None and t["expires_at"] < at,
        # The SQL filter keeps a token whose expiry is exactly now, unlike is_valid.
        "valid": lambda t: (t["usage_limit"] is None or t["times_used"] < t["usage_limit"])
        and t["revoked_at"] is None and (t["expires_at"] is None or t["expires_at"] >= at),
    }
    shown = []
    for name, condition in conditions.items():
        wanted = one.get(f"filter[{name}]")
        if wanted is not None:
            shown.append(f"filter[{name}]={str(wanted).lower()}")
            items = [t for t in items if condition(t) == wanted]
    return items, shown


def op_list(state, p, q, body):
    items, shown = filtered(list(tokens(state).values()), q, now())
    return 200, paginate(items, q, PATH + ("?" + "&".join(shown) if shown else ""), resource)


def op_get(state, p, q, body):
    return 200, single(resource(find_token(state, p["id"])))


def op_update(state, p, q, body):
    expires_at = parse_time(body.get("expires_at"))  # axum's Json extractor runs before the handler
    token = find_token(state, p["id"])
    # Present (even null) means change it; absent means leave it (update.rs, deserialize_some).
    # MAS saves both or neither: a usage limit it cannot store leaves the expiry unchanged too.
    limit = usage_limit_storable(body["usage_limit"]) if "usage_limit" in body else token["usage_limit"]
    if "expires_at" in body:
        token["expires_at"] = expires_at
    token["usage_limit"] = limit
    return 200, single(resource(token), f"{PATH}/{token['id']}")


def op_revoke(state, p, q, body):
    token = find_token(state, p["id"])
    if token["revoked_at"] is not None:
        raise ApiError(400, errors(f"Registration token with ID {token['id']} is already revoked"))
    token["revoked_at"] = now()
    return 200, single(resource(token), f"{PATH}/{token['id']}/revoke")


def op_unrevoke(state, p, q, body):
    token = find_token(state, p["id"])
    if token["revoked_at"] is None:
        raise ApiError(400, errors(f"Registration token with ID {token['id']} is not revoked"))
    token["revoked_at"] = None
    return 200, single(resource(token), f"{PATH}/{token['id']}/unrevoke")


def op_site_config_with_registration(state, p, q, body):
    """admin/v1/site_config.rs over MAS's SiteConfig (crates/cli/src/util.rs): password
    registration counts only with password login, and both token fields report
    account.password_registration_token_required; the deprecated
    account.registration_token_required (mdad's variable sets it) shows in neither,
    though MAS's registration (views/register/steps/finish.rs) requires a token for it."""
    status, config = op_site_config(state, p, q, body)
    config["password_registration_enabled"] = state.args.password_registration and not state.args.no_password_login
    config["password_registration_token_required"] = state.args.registration_token_required
    config["registration_token_required"] = state.args.registration_token_required
    return status, config


def register_with_token(state, raw: bytes):
    """Stands in for MAS's web UI: a password registration that gave the token
    {"token": "..."} finishes. The registration_token step refuses an unknown or
    invalid token, and the finish step counts the use (storage-pg use_token:
    times_used + 1, last_used_at)."""
    try:
        value = json.loads(raw)["token"]
    except (ValueError, TypeError, KeyError):
        raise ApiError(400, {"error": 'expected {"token": "..."}'})
    token = next((t for t in tokens(state).values() if t["token"] == value), None)
    if token is None or not is_valid(token, now()):
        raise ApiError(403, {"error": "invalid registration token"})
    token["times_used"] += 1
    token["last_used_at"] = now()
    return {"times_used": token["times_used"]}


OPERATIONS = {
    "siteConfig": op_site_config_with_registration,
    "addUserRegistrationToken": op_add, "listUserRegistrationTokens": op_list,
    "getUserRegistrationToken": op_get, "updateUserRegistrationToken": op_update,
    "revokeUserRegistrationToken": op_revoke, "unrevokeUserRegistrationToken": op_unrevoke,
}
