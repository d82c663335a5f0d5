# Copyright: matrix_user team
# Apache License 2.0 (see the collection's LICENSE)
#
# The documentation of the module matrix_user.matrix.matrix_registration_token,
# and nothing else: the module is the compiled program of matrix_user (the same
# binaries, in the collection's binaries/), which the action plugin of the same
# name (plugins/action/matrix_registration_token.py) runs as this module.

from __future__ import annotations

DOCUMENTATION = r'''
module: matrix_registration_token
short_description: Make a Matrix homeserver's registration tokens match a declaration
version_added: "0.2.0"
description:
  - Creates, changes and deletes registration tokens (invitations that let someone create an account on a server
    whose registration requires one), so that they match what the task declares.
  - Idempotent - C(changed) only when a token is created, deleted, or its O(uses_allowed) or O(expires) differs.
  - The token string is a secret. It never appears in the output, the diff or an error message (tokens are named by
    their place in the task, C(token) or C(tokens[2]); undeclared ones as C(undeclared[0])...); the only place the
    module writes it is O(token_file).
  - An invalid token string, O(uses_allowed=0) or an expiry that is no RFC 3339 time is refused before anything is
    sent. A past O(expires) is refused after the server's list is read and before anything is changed, when it would
    be sent (see O(expires)).
  - The server's list of tokens is read once. Then each change is sent in the declared order, undeclared deletions
    last; if one fails, the task fails with its reason, and the result lists the tokens handled before it.
  - Synapse (its admin API C(/_synapse/admin/v1/registration_tokens)), Dendrite (C(/_dendrite/admin/registrationTokens))
    and MAS (C(/api/admin/v1/user-registration-tokens), read a page of 100 at a time).
  - "MAS: a token cannot be deleted there, so O(state=absent) and O(undeclared=delete) revoke it (the result says
    C(revoked)); a revoked token declared present is unrevoked, with any change of limit or expiry. A revoked token
    counts as absent. C(completed) is MAS's C(times_used); MAS has no C(pending). Whether tokens are of use is read
    from MAS's site configuration (C(password_registration_enabled), C(password_registration_token_required)); the
    deprecated C(account.registration_token_required), which MAS enforces too, does not show there."
  - "Dendrite v0.13.8: it creates tokens only with C(client_api.registration_requires_token: true) in
    C(dendrite.yaml) (otherwise the task fails saying so), and it never checks a token when someone registers - its
    registration flows ask for none and it answers the token stage as unimplemented - so the tokens limit nobody, and
    the message says so. Its C(pending) and C(completed) stay 0. On SQLite, Dendrite answers a change of a token
    without making it; the module then deletes the token and creates it again with the declared settings, which
    loses nothing, as Dendrite never counts a use."
  - The module reads what the server advertises for registration and says in its message when a token is useless
    (registration is closed) or pointless (registration is open without a token). This never fails the task.
  - The same binary as M(matrix_user.matrix.matrix_user), with the same connection, authentication, TLS and timeout
    options and the same masking of secrets.
extends_documentation_fragment:
  - matrix_user.matrix.connection
options:
  token:
    description:
      - The token string - 1 to 64 characters of C(A-Z a-z 0-9 . _ ~ -) (the Matrix specification's rule, and Synapse's).
      - Mutually exclusive with O(token_file) and O(tokens). One of O(token), O(token_file) or O(tokens) is required.
    type: str
  token_file:
    description:
      - A file on the managed host that holds the token. When it exists, the token is read from it (less one trailing
        line break). When it does not, the server generates the token and the module writes it there (mode 0600; the
        folder must exist). In check mode nothing is written and the result says a token would be generated.
      - Mutually exclusive with O(token).
    type: path
  uses_allowed:
    description:
      - How many accounts may be registered with the token. Left out, C(null) or C(unlimited) - no limit.
      - C(0) is refused - Synapse registers an unlimited number of accounts with a token whose limit is 0, although
        its documentation says such a token is invalid. To stop a token, use O(state=absent).
      - At most 2147483647.
    type: raw
  expires:
    description:
      - When the token stops working - an RFC 3339 time with its offset, such as C(2027-01-31T18:00:00Z) or
        C(2027-01-31T19:00:00+01:00), kept to the millisecond. Left out, C(null) or C(never) - it never expires.
      - A time in the past is refused, before anything is changed, when it would be sent (a new token, or a changed
        expiry). A token that already has the declared expiry is left as it is, expired or not, so a task stays
        unchanged after the day it declares.
    type: str
  state:
    description:
      - C(present) - the token exists with these settings. C(absent) - it is deleted (Synapse, Dendrite) or revoked (MAS).
    type: str
    choices: [present, absent]
    default: present
  tokens:
    description:
      - Many tokens in one task, each a mapping of O(token), O(token_file), O(uses_allowed), O(expires) and O(state).
        The server's list is read once.
      - Mutually exclusive with O(token) and O(token_file). A token declared twice is refused.
    type: list
    elements: dict
  undeclared:
    description:
      - What to do with the server's tokens that the task does not declare. C(keep) leaves them alone. C(delete)
        deletes them (MAS - revokes those not revoked yet), which makes the declared tokens the whole set.
    type: str
    choices: [keep, delete]
    default: keep
  undeclared_max:
    description:
      - With O(undeclared=delete), the most tokens the run may delete. More fails before anything is changed, naming
        the count.
    type: int
    default: 0
  dendrite_database:
    description: Not used by this module; accepted so that C(module_defaults) for the group C(matrix_user.matrix.matrix) can set it.
    type: str
  dendrite_database_file:
    description: Not used by this module; accepted so that C(module_defaults) for the group C(matrix_user.matrix.matrix) can set it.
    type: path
  synapse_database:
    description: Not used by this module; accepted so that C(module_defaults) for the group C(matrix_user.matrix.matrix) can set it.
    type: str
  synapse_database_file:
    description: Not used by this module; accepted so that C(module_defaults) for the group C(matrix_user.matrix.matrix) can set it.
    type: path
attributes:
  check_mode:
    description: Reads the server and predicts C(changed) exactly, without changing any token or writing O(token_file).
    support: full
  diff_mode:
    description: Returns each token's state, limit and expiry before and after, never the token itself.
    support: full
notes:
  - A compiled module, run by the same binaries as M(matrix_user.matrix.matrix_user) (Linux on x86_64 and aarch64).
author:
  # The project has no public address, so no GitHub handle, yet (see the collection's README).
  - matrix_user team (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Two invitations of one account each, valid until the end of January
  matrix_user.matrix.matrix_registration_token:
    homeserver_url: https://matrix.example.com
    admin_token_file: /etc/matrix/admin-token
    tokens:
      - token: welcome-alice
        uses_allowed: 1
        expires: "2027-01-31T23:59:59Z"
      - token_file: /root/invitation-bob
        uses_allowed: 1
  no_log: true

- name: Only these tokens exist (delete at most 5 others)
  matrix_user.matrix.matrix_registration_token:
    homeserver_url: https://matrix.example.com
    admin_token_file: /etc/matrix/admin-token
    tokens:
      - token: team-2027
        uses_allowed: 20
    undeclared: delete
    undeclared_max: 5
  no_log: true
'''

RETURN = r'''
tokens:
  description: One entry per declared token, in the order declared.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Where the token is declared - C(token) (one token) or C(tokens[2]).
      type: str
    action:
      description: C(created), C(updated), C(deleted) (MAS - C(revoked)), C(unrevoked) (MAS) or C(unchanged) (in check
        mode, what would be done).
      type: str
    exists:
      description: Whether the token exists after the run.
      type: bool
    uses_allowed:
      description: The limit after the run (before it, for a deleted token); C(null) for unlimited.
      type: int
    expires:
      description: The expiry after the run (before it, for a deleted token), RFC 3339 in UTC; C(null) for never.
      type: str
    pending:
      description: Registrations that passed the token stage and have not finished (Synapse counts them against the limit).
      type: int
    completed:
      description: Accounts registered with the token.
      type: int
undeclared:
  description: With O(undeclared=delete), one entry per undeclared token deleted (in check mode, to delete), named
    C(undeclared[0]) and so on, with the same fields as RV(tokens) - its limit, expiry and uses, never its value.
  returned: always
  type: list
  elements: dict
registration:
  description: What the server advertises for registration (its client API's answer to an empty registration
    request), and what that means for the tokens. The same words end the task's C(msg); a server that cannot be asked is said
    there too, and never fails the task.
  returned: when the server answered
  type: dict
  contains:
    enabled:
      description: Whether the server lets anyone register through the client API.
      type: bool
    token_required:
      description: Whether every registration flow the client API offers asks for a token.
      type: bool
    message:
      description: In words, whether the tokens can be used.
      type: str
'''
