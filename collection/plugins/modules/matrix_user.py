# Copyright: matrix_user team
# Apache License 2.0 (see the collection's LICENSE)
#
# The documentation of the module matrix_user.matrix.matrix_user, and nothing
# else: the module is a compiled program (one static binary per platform, in
# the collection's binaries/), and the action plugin of the same name
# (plugins/action/matrix_user.py) runs the one that fits the managed host.

from __future__ import annotations

DOCUMENTATION = r'''
module: matrix_user
short_description: Make Matrix homeserver users match a declaration
version_added: "0.1.0"
description:
  - Creates Matrix users, and changes their admin flag, password, user type, display name and
    state (active or deactivated) on Synapse, Dendrite or the Matrix Authentication Service (MAS),
    so that they match what the task declares.
  - Idempotent. A second identical run reports C(changed=false). An existing user is never an
    error - the module reconciles it.
  - One task can manage a whole list of users (O(users)), in parallel, with one result per user.
    If one user fails, the others are still handled, and the task then fails with a summary that
    names each failed user.
  - This is a compiled (binary) module. Ansible cannot mask its arguments, so the module does it
    itself - passwords, shared secrets, tokens, the password of any C(user:password@) URL
    (such as O(homeserver_url), O(mas_url) or O(dendrite_database), whatever its length), the
    HTTP Basic form (base64) of O(mas_client_id) with O(mas_client_secret), and every token or
    password it makes
    never appear in its output, in its diff or in its error messages, on success or failure.
    Messages are never built from a secret. As a backstop, the whole output is masked last
    (C(********)) wherever a secret appears, as written or as a server may echo it - JSON-escaped
    up to three levels deep (JSON inside a JSON string), as C(\uXXXX) escapes of any
    character, percent-encoded (either case, C(+) for a space) or as HTML entities, in any mix.
    Secrets shorter than 4 characters are not masked (masking every C(ab) would make messages
    unreadable and give the value away); they are still never put in a message. A secret made
    only of C(*) cannot be told from the mask.
  - "Server answers are quoted only as the server's own error fields (Synapse's C(errcode) and
    C(error), Dendrite's C(message), MAS's C(errors[0].title)), masked and then cut to 300
    characters; an HTML error page is described by its size and title, a JSON answer without an
    error field by its size, and a plain-text answer by its first 100 characters (masked before
    the cut, so a cut never leaves part of a secret). An invalid argument is quoted back as at
    most its first 64 characters with its size; a value over 64 KiB by its size only. O(ca_path)
    and O(token_cache_dir) longer than 4096 bytes (Linux's PATH_MAX) are refused."
  - If the module hits an internal error (a bug), it still prints one JSON object with
    C(failed=true) and a masked message that starts with C(internal error in matrix_user), and
    exits with 1.
  - Still put C(no_log) on tasks that pass secrets, because C(-vvv) prints the arguments Ansible
    sends.
  - "Synapse and Dendrite, with the shared secret and no O(admin_token): the module registers a
    service account of its own (O(service_account), an admin; of user type C(bot) on Synapse)
    with the shared secret on its first run.
    It keeps that account's access token in O(token_cache_dir) for later runs. This avoids
    C(/login), which Synapse rate-limits to a few logins per hour by default. When the cache is
    lost, the module logs the account in with a password derived from the shared secret, and
    removes that account's sessions that have been idle for over an hour. Check mode changes no
    declared user, but it authenticates as a real run does - it may register the service account,
    log it in and remove its idle sessions - and a password check opens a session and closes it
    again (see below). A cached token whose account is no
    longer a server admin (someone demoted it) is deleted and the account logged in afresh; if it
    is still no admin the run fails, saying how to promote it again (it cannot promote itself).
    The service account is not a user the module manages: declaring it in O(users) (any state)
    fails before anything is sent, while the module acts as it (no O(admin_token))."
  - "Creation never takes over an account someone else made meanwhile. With the shared secret,
    registration refuses an existing user. With O(admin_token) alone on Synapse (whose
    C(PUT /_synapse/admin/v2/users) creates or overwrites), the module first sends an empty PUT,
    which changes nothing on an existing account and whose answer (201 or 200) says who created
    it; only after 201 does a second PUT set the password and attributes. A user found to exist
    is reconciled as an existing one (O(update_password=on_create) leaves its password alone). If
    that second PUT fails, the new account (without a password) is deactivated, so that the next
    run reactivates it with its password; if deactivating fails too, the message says to run
    again with O(update_password=always)."
  - "A request that changes something is never sent twice blindly. After a 502, 503 or 504
    (a proxy that may have forwarded it) or a timeout, the module reads the server instead. A
    shared-secret registration whose answer was lost is read back; a user found there is
    reported C(created) (registration is all or nothing), a user still missing is registered
    again with a fresh nonce. A creation through Synapse's or MAS's admin API whose answer was
    lost, with the user found there, fails for that user: the module cannot tell whether it or
    someone else created it, and leaves it alone. Reads (GET) are retried within O(wait_timeout)."
  - "No managed user is left with a device, but how the module gets there differs per server.
    Synapse - users are created without a login (C(inhibit_login)); a password check
    (O(update_password=always)) logs no one in - the admin API issues a short-lived token (five
    minutes, no device), the password is checked by user-interactive auth on a request that
    deletes no device, and the token is logged out. Dendrite - it logs every registered user in,
    and the module logs that session out at once; a password check is a login with the declared
    password, logged out at once (without O(dendrite_database), reading a user whose password is
    declared does the same). MAS - users are created through its admin API without a login; a
    password check is a compatibility login, logged out at once (see below). These sessions are
    opened and closed in check mode too."
  - "MAS: the module works through MAS's admin API only (no container or database access). With
    O(mas_client_id) it fetches a token by the client-credentials grant (HTTP Basic, else the
    form, whichever the client is configured for) at the start of each run, and fetches a new
    one once when MAS refuses it mid-run (MAS tokens live five minutes). New users get their
    password, admin flag and verified O(email) or O(emails). If MAS refuses the password (its
    C(passwords.minimum_complexity)), the new user is deactivated at once (its C(actions) say
    C(created) and C(deactivated)), and the next run with an accepted password reactivates it;
    O(mas_skip_password_check=true) sets the password anyway. MAS cannot read a password back, so
    O(update_password=always) tries the declared one with a compatibility login
    (C(/_matrix/client/v3/login)) and logs that session out at once; MAS allows 3 such logins a
    minute from one address by default, so the module waits when it checks more (see below).
    With MAS's password login disabled, passwords are refused with a clear error.
    MAS's admin flag means the user may ask for admin rights. MAS has no user types, so
    O(user_type=bot)/O(user_type=support) are refused. O(displayname) is set when the module
    creates the user (MAS 1.18 or later, which hands it to the homeserver; the module reads
    C(/api/admin/v1/version) and refuses it on an older MAS before anything is written); an
    existing user's is compared only when O(homeserver_url) names the homeserver, which shows
    it, and a different one is refused, since MAS cannot change it."
  - "MAS, many users: from 20 declared users on, the module reads MAS's user list and e-mail list
    (C(/api/admin/v1/users), C(/api/admin/v1/user-emails), 100 a page; any MAS with the admin API),
    and the upstream link list (C(/api/admin/v1/upstream-oauth-links)) when a user declares
    O(upstream_links), instead of two or three requests per user, unless MAS holds more than ten
    times as many users (or addresses, or links) as are declared, when reading each user alone is
    cheaper. A re-run of 60 unchanged users makes one request of each list. When an address a
    user declares belongs to another MAS user, every user is read alone, so that the one
    declaring it fails with its own message."
  - "Which MAS each feature needs. The module is tested against MAS 1.22's admin API (through a
    contract server that checks every request against MAS 1.22.0's published OpenAPI file). Where
    an older release is named below, MAS's own project says so; \"tested against 1.22\" means
    that no older release is confirmed. Any user (create, password, admin flag,
    deactivate/reactivate) - tested against 1.22. O(displayname) at creation - 1.18 or later
    (read from C(/api/admin/v1/version), tested against 1.22; a MAS without that endpoint gets a
    declared O(displayname) refused). O(upstream_links) - tested against 1.22.
    O(access_token_file) (personal sessions) - 1.5 or later. O(mas_adopt_existing)
    (C(skip_homeserver_check)) - tested against 1.22. O(mas_skip_password_check) - tested against
    1.22. O(locked) (C(lock), C(unlock)) - tested against 1.22. O(email) and O(emails) (the
    user-emails admin API) - tested against 1.22. O(undeclared) (the user list, lock, deactivate) -
    tested against 1.22. An existing user's O(displayname) compared (with O(homeserver_url)) - any
    MAS (it is read from the homeserver)."
  - "MAS's login limit: each password check of O(update_password=always) is a compatibility
    login, and MAS allows 3 a minute from one address by default. When MAS answers 429, the module
    waits as MAS asks, up to ten minutes for one login, whatever O(wait_timeout) says (that is
    for a server that is down, and MAS's limit is a wait it asks for on purpose), so a bulk check
    completes; the result's RV(waited) says how long and why. For a bulk password check,
    raise the limit in MAS's configuration, e.g. C(rate_limiting: {login: {per_ip: {burst: 100,
    per_second: 10}}}) (the keys of MAS's C(rate_limiting.login) section, also C(per_account)),
    and restart MAS. Any MAS with compatibility login."
extends_documentation_fragment:
  - matrix_user.matrix.connection
options:
  dendrite_database:
    description:
      - Dendrite only. The user API database, as C(user_api.account_database) in C(dendrite.yaml)
        - a PostgreSQL URL (C(postgres://user:pass@host/db)) or the path of the SQLite file.
        Dendrite has no API that reads or changes the admin flag or the deactivation state of an
        existing user, so these need the database - changing the admin flag of an existing user,
        O(state=absent) for an existing user, and reactivation. Without it, the module creates
        users (admins too), checks and resets passwords, and learns what a login with the
        declared password shows (then logs out) - that the account is active and, when O(admin)
        is declared, whether it is an admin. It never guesses the rest. A change that depends on
        something it could not see fails for that user with a message asking for this option -
        an existing user declared V(present) whose declared password does not log in (or who
        declares none), since Dendrite answers alike for a deactivated account, and a declared
        O(admin) it could not read. One exception - with O(update_password=always), a password
        that does not log in is set, then a login with it tells whether the account is
        deactivated (then the user fails, asking for this option). In diff mode, what was not
        seen shows as C(unknown).
      - "Deactivation (O(state=absent)) works through Dendrite's own self-deactivation, which
        needs the user's password - the module reads the stored password hash from the database,
        sets a random password, logs in with it and deactivates. If any step after that fails,
        it writes the old hash back, so the user keeps its own password (Dendrite may already
        have made it leave its rooms)."
      - "Other Dendrite notes: creating users always needs O(registration_shared_secret), because
        Dendrite has no other way. Dendrite logs every registered user in, and the module logs that
        session out at once. Dendrite has no user types, no erasure, and accepts only passwords of
        8 to 512 bytes (bytes of UTF-8, not characters) - the module refuses others before it
        sends anything."
    type: str
  dendrite_database_file:
    description:
      - Dendrite only. The path, on the managed host, of a file holding O(dendrite_database) (a
        PostgreSQL URL holds the database password; this keeps it out of Ansible's variables).
        Mutually exclusive with O(dendrite_database).
      - The file must be a regular file of at most 16 KiB (a FIFO, a device such as C(/dev/zero),
        or a larger file is refused by name, before anything is sent); it is read whole, less one
        trailing line break (C(\n) or C(\r\n), as C(echo) and editors leave one - a second one is
        part of the secret). A file every user of the host can read is used, with a warning in the
        result (make it readable only by its owner, as ssh asks of a private key).
    type: path
  synapse_database:
    description:
      - Synapse only, optional, for speed. Synapse's own database, read only - a PostgreSQL URL
        (C(postgres://user:pass@host/synapse) or C(postgresql://...), the values of
        C(database.args) in C(homeserver.yaml); no TLS) or the path of its SQLite file
        (C(homeserver.db)).
      - Synapse's user list does not show rate-limit overrides, SSO identities or e-mail
        addresses, so without this option every user that declares O(users[].ratelimit),
        O(users[].external_ids) or O(users[].emails) is read alone through the admin API (its
        record and its override, about 4 ms each on Synapse). With it, when the module reads
        Synapse's user list - the list form with 20 or more users, on a server that holds at most
        ten accounts per declared user - it reads the tables
        C(ratelimit_override), C(user_external_ids) and C(user_threepids) for all of them at
        once (one query per table; values are bound, never put into the SQL), and a user whose
        rows are exactly as declared needs no read of its own. The database never decides a
        change - a user whose rows differ, or who declares something the database is not read
        for (such as O(users[].avatar) or O(users[].suspended)), is read alone through the admin
        API as without this option, and every change is made through the admin API.
      - "The module only reads: SQLite is opened read-only (and never created), PostgreSQL with
        read-only transactions. A role that may only read those three tables is enough, for
        example C(CREATE ROLE matrix_user_reader LOGIN PASSWORD '...';) then C(GRANT SELECT ON
        ratelimit_override, user_external_ids, user_threepids TO matrix_user_reader;) in
        Synapse's database."
      - Give the database Synapse writes to, never a replica or a backup. The module trusts what it
        reads there - a user whose rows there look as declared is not read through the admin API -
        so a replica that lags behind, or a backup, hides drift made since (a changed rate-limit
        override, a removed SSO identity or e-mail address) - the module reports such a user
        unchanged and leaves it as it is.
      - On connecting, before anything is written, the module checks that those tables exist;
        a database that is not Synapse's, a wrong path or a wrong password fails the task
        naming O(synapse_database). The URL and its password are never printed. A SQLite path
        that is a FIFO, a device or a folder (or whose C(-journal), C(-wal) or C(-shm) file is)
        is refused, never opened. A database's error message is quoted cut to 300 characters,
        as a server's answer is.
      - Refused with O(homeserver=dendrite) and O(homeserver=mas), and by a binary built without
        the C(databases) cargo feature.
    type: str
  synapse_database_file:
    description:
      - Synapse only. The path, on the managed host, of a file holding O(synapse_database) (a
        PostgreSQL URL holds the database password; this keeps it out of Ansible's variables).
        Mutually exclusive with O(synapse_database).
      - The file must be a regular file of at most 16 KiB (a FIFO, a device such as C(/dev/zero),
        or a larger file is refused by name, before anything is sent); it is read whole, less one
        trailing line break (C(\n) or C(\r\n), as C(echo) and editors leave one - a second one is
        part of the secret). A file every user of the host can read is used, with a warning in the
        result (make it readable only by its owner, as ssh asks of a private key).
    type: path
  mas_adopt_existing:
    description:
      - MAS only (C(skip_homeserver_check) of the admin API, as MAS 1.22 documents it); refused by name with Synapse and Dendrite.
      - A half-made account is one the homeserver has but MAS lacks (registered through Synapse's admin
        API behind MAS's back); MAS refuses to create it, and the module fails that user saying so.
      - With V(true), such a user is created in MAS with MAS's C(skip_homeserver_check), only after
        MAS reported the username as taken by the homeserver, and becomes whole (it can log in
        through MAS, with the declared password). Make sure the homeserver's account is the person you
        declare, as it is adopted with its rooms.
    type: bool
    default: false
  username:
    description:
      - One user - a plain localpart (C(alice), as the playbook docs recommend) or a full ID
        (C(@alice:example.com)). Localparts may use C(a-z 0-9 . _ = - / +), must not start with
        C(_) and must not be all digits. Upper case is refused rather than silently folded.
      - Mutually exclusive with O(users). The per-user options below apply to this user.
    type: str
  password:
    description:
      - The user's password. Needed to create or reactivate a user (on MAS, a user with an
        O(upstream_links) entry is created without one). It is written only as
        O(update_password) says.
    type: str
  update_password:
    description:
      - V(on_create) sets the password only when the module creates the user.
      - V(always) also replaces the password of an existing user, but only when the stored
        password really differs from O(password). The module checks the password on the server
        first, so C(changed) stays exact.
    type: str
    choices: [on_create, always]
    default: on_create
  update_type:
    description:
      - When O(admin) and O(user_type) are written. V(always) makes an existing user's flag and
        type match on every run (a user promoted by hand is demoted when it declares O(admin=false)).
      - "V(on_create) sets them only when the module creates the user, and an existing user keeps
        whatever it has: the meaning of C(initial_type) in matrix-docker-ansible-deploy's user
        creator, which the role keeps for that creator's lists."
    type: str
    choices: [on_create, always]
    default: always
  admin:
    description:
      - Whether the user is a server admin. Any Ansible boolean spelling (V(yes)/V(no),
        V(true)/V(false), V(1)/V(0), V(on)/V(off)) is accepted. Other values are refused.
      - When it is left out, a new user is not an admin, and an existing user keeps its flag.
    type: bool
  user_type:
    description:
      - Synapse's user type. When it is left out, the module does not manage it.
      - V(regular), V(bot), V(support), or a type the server's configuration adds in
        C(user_types.extra_user_types) (up to 255 characters, no spaces). The module cannot
        know which extra types a server has; one it does not know is refused by Synapse, and
        the error names the field and the type. Nothing is created or changed then.
      - Dendrite and MAS have no user types and refuse any but V(regular) before anything is sent.
    type: str
  displayname:
    description:
      - The display name. When it is left out, the module does not manage it (Synapse then uses the localpart for new users).
      - With MAS (1.18 or later), it is set when the module creates the user (MAS hands it to the
        homeserver). MAS can neither show nor change an existing user's display name (the
        homeserver keeps it). Without O(homeserver_url), the module therefore does not compare it
        for an existing user - it reports no change for it, and the diff leaves it out.
      - With MAS and O(homeserver_url), the module reads an existing user's display name from the
        homeserver's profile (C(GET /_matrix/client/v3/profile/<user_id>/displayname), without a
        token; one request per user that declares O(displayname)) and compares it. A different
        one fails that user before anything is written for it (check mode predicts it), with a
        message that says to change it on the homeserver - Synapse's admin API
        (C(PUT /_synapse/admin/v2/users/<user_id>) with C(displayname)) - or in the user's
        client, or to declare the current one. A user the homeserver has no profile of yet (MAS
        provisions users there in the background) is not compared in that run. A homeserver that
        does not answer, or shows profiles only to signed-in users, fails the run before anything
        is written (see O(homeserver_url)).
      - On a MAS older than 1.18, it is refused before anything is written. A MAS whose version is
        no release number (a build without git metadata reports C(VERGEN_IDEMPOTENT_OUTPUT)) is sent
        it.
    type: str
  email:
    description:
      - MAS only. An e-mail address that the user must have. The module adds it as a verified
        address, so the user is not asked to confirm it at first login. The user's other
        addresses stay; to keep exactly a list, declare O(emails) instead.
      - Sent as given, which MAS keeps; compared as for O(emails) on MAS.
        An address another MAS user has fails this user, naming the address, before anything of it is
        written (in check mode too).
      - Not together with O(emails) for one user; both fail naming both before anything is sent.
        Synapse refuses it (declare O(emails) there); so does Dendrite.
    type: str
  upstream_links:
    description:
      - MAS only. The user's links to its accounts at upstream identity providers (MAS's
        C(upstream_oauth2.providers)), through which MAS logs it in - the equivalent of
        C(mas-cli manage register-user --upstream-provider-mapping). Each entry is a mapping of
        C(provider) (the provider's ID, or its human name as MAS lists it, when only one
        provider has it) and C(subject) (the user's C(sub) at that provider).
      - With an entry, O(password) becomes optional - a new user is created (and a deactivated
        one reactivated) without one, and logs in through its provider only.
      - Links are kept exactly as declared - missing ones are added first, then others removed
        (V([]) removes all), so that a user never loses the link it logs in with to a refusal. When
        it is left out, the module does not manage them.
      - A provider MAS does not list is named in the error before anything is written. A
        subject linked to another MAS user fails this user before anything of it is written (a new
        user is not created), in check mode too.
      - Needs MAS's upstream OAuth link and provider admin API (as 1.22 publishes it, the
        version the module is tested against). Synapse and Dendrite refuse it by name.
    type: list
    elements: dict
    suboptions:
      provider:
        description: The provider's ID (a ULID) or human name, as MAS lists it.
        type: str
        required: true
      subject:
        description: The user's subject (C(sub) claim) at that provider.
        type: str
        required: true
  mas_skip_password_check:
    description:
      - MAS only. V(true) sets O(password) even when MAS's password policy
        (C(passwords.minimum_complexity)) would refuse it as too weak, as C(skip_password_check)
        of MAS's C(set-password) admin action does (in MAS's admin API as 1.22 publishes it,
        the version the module is tested against). For service accounts and bots whose
        password is given, not chosen by a person.
      - V(false) (the default) keeps MAS's policy - a refused password fails the user, see the
        description. Synapse and Dendrite refuse V(true) by name before anything is sent.
    type: bool
    default: false
  state:
    description:
      - V(present) - the user exists and can log in (a deactivated user is reactivated, which needs O(password),
        or on MAS an O(upstream_links) entry).
      - V(absent) - the user is deactivated. Matrix never frees a user ID, so the account stays
        reserved. A user that does not exist stays absent and reports no change.
    type: str
    choices: [present, absent]
    default: present
  erase:
    description:
      - With O(state=absent) on Synapse, also erase the user's messages for new room members (GDPR erasure).
      - With MAS, MAS asks the homeserver to erase the user (MAS's own default is to erase; the module's is not to).
    type: bool
    default: false
  locked:
    description:
      - Whether the account is locked. A locked user cannot log in (Synapse answers
        C(M_USER_LOCKED)); nothing is erased, and V(false) lifts the lock.
      - When it is left out, the module does not manage it; a new user is created unlocked.
      - Synapse (its user admin API) and MAS (its C(lock) and C(unlock) actions; reactivating a
        user on MAS keeps a declared lock). Dendrite has no lock and refuses it before anything is sent.
      - A locked user cannot log in, so with O(update_password=always) its password cannot be
        checked while it is locked; the module compares it on the first run that finds the user
        unlocked (the run after the one that unlocks it).
      - A user that someone else locked and whose O(users[].locked) is left out fails with
        O(update_password=always), before anything is sent, saying to declare V(false) (unlock) or
        V(true) (keep the lock), or to use O(update_password=on_create).
    type: bool
  suspended:
    description:
      - Whether the account is suspended (Synapse's suspension, MSC3823), V(false) lifts it. A
        suspended user can still log in and read, but cannot send messages, join rooms or change
        its profile.
      - When it is left out, the module does not manage it. Synapse's user list does not show
        suspension, so each user that declares it costs one read of its own.
      - Synapse only; Dendrite and MAS refuse it before anything is sent.
    type: bool
  shadow_banned:
    description:
      - Whether the user is shadow-banned, V(false) lifts it. Synapse accepts what a
        shadow-banned user sends and shows it to nobody else.
      - When it is left out, the module does not manage it.
      - Synapse only; Dendrite and MAS refuse it before anything is sent.
    type: bool
  ratelimit:
    description:
      - The user's own override of the homeserver's message rate limit, which bots usually need.
      - V(unlimited) lifts the limit (Synapse's override of 0 messages per second and a burst of 0).
      - A mapping of C(messages_per_second) and C(burst_count) sets both numbers (see the example);
        each is a whole number from 0 and both are required; no other key is accepted.
      - V(default) removes the override, so the server's configured limits apply again.
      - When it is left out, the module does not manage it. The override is not in Synapse's user
        list, so each user that declares it costs one read of its own, unless O(synapse_database)
        shows it as declared. A new user gets it right after creation.
      - Synapse only (its C(override_ratelimit) admin API); Dendrite and MAS refuse it before
        anything is sent.
    type: raw
  rooms:
    description:
      - Rooms the user must be joined to, each a room alias (V(#general:example.com)) or a room ID
        (V(!abc:example.com), or the server-less IDs of room version 12). Names are checked by
        shape before anything is sent; whether a room exists is the server's to say.
      - Joins only. A room that is not in the list (or is removed from it later) is left as it is;
        the module never makes a user leave a room. When it is left out or empty, membership is
        not managed, read or shown.
      - Each missing room is joined through Synapse's admin join API
        (C(POST /_synapse/admin/v1/join/<room>)); a new user joins right after creation. To join
        a user to a room that is not public, Synapse invites it first as the account the module
        acts as (O(service_account), or the owner of O(admin_token)), which must therefore be in
        that room and allowed to invite. Only local users can be joined, and the room must be
        known to the server.
      - Membership is read from each declared room's member list (Synapse's room admin API), once
        per room and run however many users declare it; aliases are looked up once per run. A room
        the server does not know, or an alias that names no room, fails the user at that read (so
        check mode reports it too).
      - A room that cannot be joined fails that user (the others go on) with an error that names
        the field, the room and Synapse's reason (its errcode and error, e.g. C(M_NOT_FOUND) for an
        alias that names no room, C(M_FORBIDDEN) for a private room the module's account is not
        in); the user's other rooms are still joined. An alias that names no room is found when
        the user is read, so check mode reports it too, except for a user still to be created.
      - Membership is not in Synapse's user list; each declared room's members are read once per
        run, however many users declare it, and each alias is looked up once. When the module
        reads the user list (the list form with 20 users or more), a user that declares rooms
        needs no read of its own for them.
      - Synapse refuses to join a suspended user; a user whose O(suspended) is set in the same
        run joins its rooms first, one whose suspension is lifted joins after.
      - Not with O(state=absent) (deactivation makes a user leave every room).
      - Synapse only; Dendrite and MAS refuse it before anything is sent.
    type: list
    elements: str
  emails:
    description:
      - Exactly the e-mail addresses the user must have (Synapse's threepids of medium C(email), or
        MAS's user e-mails); declared ones it lacks are added, others it has are removed; V([])
        removes every one.
      - Each must be an address (one C(@), a name before it, a domain such as C(example.com) after it,
        no spaces, at most 500 characters) and each may be given once, for one user only (compared as
        the server compares addresses); anything else fails naming the entry (for example
        C(users[1].emails[0])) before anything is sent.
      - On Synapse each is sent, shown and compared as Synapse stores it (its C(canonicalise_email)),
        the name case folded as Python's C(str.casefold) does (C(ß) is C(ss), a capital sigma C(σ)
        wherever it stands) and the domain lowercased. Refused, because Synapse's form depends on the
        Python it runs on - a capital letter Unicode cased only after 13.0 (such as Vithkuqi or Garay
        capitals; write it in lower case), and a capital C(Σ) in the domain (write the domain in lower
        case).
      - An address that another account has fails naming that account, and is left with it (Synapse
        would move it silently).
      - Phone numbers (C(msisdn) threepids) are kept. When it is left out, the module does not manage
        the addresses. Synapse's user list does not show them, so each user that declares O(emails)
        costs one read of its own, unless O(synapse_database) shows them as declared.
      - On MAS, a new address is added as verified (C(POST /api/admin/v1/user-emails)), so the user
        is not asked to confirm it, and one not declared is removed
        (C(DELETE /api/admin/v1/user-emails/<id>)). MAS keeps an address as given and compares
        C(LOWER(email)) in its PostgreSQL, which lowercases what the database's C(LC_CTYPE) does, so a
        new address is sent as declared, as O(email) is, and one the user has in other case is kept.
        The module takes two addresses for one when they differ only in the case of ASCII letters, as
        the C locale does (matrix-docker-ansible-deploy's database for MAS); where a Unicode locale
        could take them for one too (C(ΝΙΚΟΣ) and C(νικοσ)), MAS's own lookup decides (among 20 users
        or more, each is then read alone), and two such addresses are never declared for two users
        (refused before anything is sent, as the same address is). An address another MAS user has (MAS's
        C(filter[email])) fails this user naming the address, in check mode too, before anything of
        it is written. Not together with O(email) for one user; both fail naming both before anything
        is sent.
      - Synapse and MAS. Dendrite refuses it before anything is sent.
    type: list
    elements: str
  external_ids:
    description:
      - Exactly the SSO identities the user must have, so that a login through that provider lands on
        this account (for example before moving users to SSO). Declared ones it lacks are added,
        others it has are removed; V([]) removes every one.
      - Each is a mapping of C(auth_provider) (the provider's ID as Synapse records it, such as
        C(oidc-github) for an C(oidc_providers) entry with C(idp_id) C(github), or C(saml), C(cas))
        and C(external_id) (the user's ID at that provider); both are required and not empty, no other
        key is accepted, and each identity may be given once.
      - An identity that another account has fails naming that account, and is left with it.
      - When it is left out, the module does not manage them. Synapse's user list does not show them,
        so each user that declares O(external_ids) costs one read of its own, unless
        O(synapse_database) shows them as declared.
      - Synapse only; Dendrite and MAS refuse it before anything is sent (on MAS declare
        O(upstream_links)).
    type: list
    elements: dict
  avatar:
    description:
      - The user's avatar, as one of two things.
      - An C(mxc://server/media_id) URI, set as it is when the user's avatar is another (checked by
        shape, a server name and a media ID of letters, digits, C(_) and C(-); at most 1000 characters).
      - The absolute path of an image file on the managed host (the role copies one from the controller
        first). It is read and checked before anything is sent; it must be a regular, non-empty file (a FIFO
        or a device is refused, never read) of at most 50 MiB (Synapse's default C(max_upload_size); a server configured lower refuses the upload), a
        PNG, JPEG, GIF or WebP image judged by its first bytes, not its name. It is uploaded only when
        the user's avatar is not already its content; the module compares by downloading the current
        avatar (when it is this server's media) through Synapse's authenticated media API, so the same
        file is not uploaded again on the next run, whatever its name. A new upload replaces the avatar;
        the old media stays on the server.
      - The upload is made with the module's own token (the service account's, or O(admin_token)'s), so
        the media belongs to that account, not to the user; Synapse lists it under that account's media.
      - In diff mode, before shows the current URI (C(null) for none) and after the declared value, the
        URI, or the file's path when it is to be uploaded (its URI is not known before the upload).
        Check mode downloads to compare but never uploads.
      - When it is left out, the module does not manage it; each user that declares it costs one read
        of its own (and a download for a file).
      - Synapse only; Dendrite and MAS refuse it before anything is sent.
    type: str
  access_token_file:
    description:
      - A path on the managed host where the module keeps a valid personal access token of the user,
        for a bot to read (the file holds the token alone). It is written only when it holds no token
        MAS accepts - on creation, or when its session was revoked (a new session) or its token
        expired (the session is regenerated) - and only then is the user reported changed, with the
        action C(access token written). Check mode predicts that and writes nothing.
      - The ID of the MAS personal session behind the token is kept beside it in C(<path>.session),
        so that each run asks MAS whether that session still works without reading or sending the
        token. Both files are mode 0600, written in one step (a temporary file renamed over them),
        never through a symbolic link, in a folder created with mode 0700 if missing. A folder others
        can write, or owned by another user, and a token or session file that is a symbolic link, a
        FIFO, a device or larger than 16 KiB, are refused before anything is sent (check mode too),
        so a new user is never created and then left without its token. The token never appears in
        any output.
      - The session has the scope C(urn:matrix:org.matrix.msc2967.client:api:*) (the Matrix client
        API), no expiry, and the name C(matrix_user access_token_file) in MAS.
      - MAS only, with the personal-sessions admin API (C(/api/admin/v1/personal-sessions), MAS 1.5
        or later; tested against 1.22; a MAS without it answers 404, which the module reports).
        Synapse and Dendrite refuse it by name before anything is sent.
      - It cannot tell a token edited by hand in the file from the one MAS issued; remove both
        files to have a new token written.
    type: path
  users:
    description:
      - Many users in one task. Each entry takes the per-user options above (O(username),
        O(password), O(admin), O(user_type), O(displayname), O(email), O(state),
        O(update_password), O(erase)). Each user may be declared only once.
      - Each entry also takes O(locked), O(suspended) and O(shadow_banned).
      - Each entry also takes O(ratelimit), O(rooms), O(emails), O(external_ids), O(avatar),
        O(mas_skip_password_check), O(upstream_links) and O(access_token_file).
    type: list
    elements: dict
    suboptions:
      username:
        description: As O(username).
        type: str
        required: true
      password:
        description: As O(password).
        type: str
      update_password:
        description: As O(update_password).
        type: str
        choices: [on_create, always]
        default: on_create
      update_type:
        description: As O(update_type).
        type: str
        choices: [on_create, always]
        default: always
      admin:
        description: As O(admin).
        type: bool
      user_type:
        description: As O(user_type).
        type: str
      displayname:
        description: As O(displayname).
        type: str
      email:
        description: As O(email).
        type: str
      state:
        description: As O(state).
        type: str
        choices: [present, absent]
        default: present
      erase:
        description: As O(erase).
        type: bool
        default: false
      locked:
        description: As O(locked).
        type: bool
      suspended:
        description: As O(suspended).
        type: bool
      shadow_banned:
        description: As O(shadow_banned).
        type: bool
      ratelimit:
        description: As O(ratelimit).
        type: raw
      rooms:
        description: As O(rooms).
        type: list
        elements: str
      emails:
        description: As O(emails).
        type: list
        elements: str
      external_ids:
        description: As O(external_ids).
        type: list
        elements: dict
      avatar:
        description: As O(avatar).
        type: str
      mas_skip_password_check:
        description: As O(mas_skip_password_check).
        type: bool
        default: false
      upstream_links:
        description: As O(upstream_links).
        type: list
        elements: dict
      access_token_file:
        description: As O(access_token_file).
        type: path
  undeclared:
    description:
      - What happens to the local accounts of the server that O(users) does not declare. Only with
        O(users) (the list form), which then declares every account the server should have;
        V(keep) (the default) leaves them alone.
      - V(lock) locks each one (its sessions stop and nobody can log in; nothing is erased, and
        O(locked)=false undoes it). V(deactivate) deactivates each one, without erasing it; a
        deactivated account cannot be used again without a new password.
      - "Never touched: the declared users (whatever their O(state)); the module's own
        O(service_account), and the account behind O(admin_token) when that is what the module acts
        with; application-service users (bridges' puppets, found by one read per account, as
        Synapse's user list does not say which they are); guests (Synapse makes them on demand for
        guest access, with numeric names, so they cannot be declared); accounts already
        deactivated, and for V(lock) those already locked (so a re-run reports no change); and
        those matching O(undeclared_ignore). Synapse's server-notices user is not a registered
        account and is never listed."
      - "With O(homeserver=mas) the accounts are MAS's users, read from its admin API's user list a
        page at a time, and locked or deactivated (without erasing) through the admin API. Never
        touched there: the declared users, users already deactivated (and for V(lock) those already
        locked), MAS's legacy guests (Synapse guests carried over into MAS), and those matching
        O(undeclared_ignore). Application-service users and the server-notices user live on the
        homeserver, never in MAS, so MAS does not list them. The module acts as an OAuth2 client
        (O(mas_client_id)), which is no user, so no account is spared for it, and
        O(service_account) (a homeserver's notion) is not spared either. An O(admin_token) issued
        to a user (that user's OAuth2 session with the C(urn:mas:admin) scope, rather than the
        client-credentials grant) acts as that user, which MAS's admin API does not reveal: declare
        that user or match it in O(undeclared_ignore), or the run may lock it and MAS then refuses
        the token."
      - Check mode lists exactly who would be touched, in RV(undeclared) and one entry each in
        RV(users) and the diff, and touches nobody.
      - A run that would touch more than O(undeclared_max) accounts fails before changing anything
        (the declared users included), naming how many and which.
      - Synapse and MAS; Dendrite (its admin API has no user list and no lock) refuses it before
        anything is sent.
    type: str
    choices: [keep, lock, deactivate]
    default: keep
  undeclared_ignore:
    description:
      - Regular expressions (Rust C(regex) syntax) of the localparts O(undeclared) never touches.
      - Each is matched against the localpart only (C(bot) for C(@bot:example.com)) and must match
        all of it, as if written between C(^) and C($), so C(bot) spares C(bot) and not C(robot);
        write C(bot-.*) for every C(bot-) account, or C(_discord_.*) for a bridge's puppets.
      - An invalid pattern is refused by its place in the list (C(undeclared_ignore[1])) before
        anything is sent.
    type: list
    elements: str
    default: []
  undeclared_max:
    description:
      - The most accounts one run may lock or deactivate through O(undeclared). More fails the run
        before any change, saying how many and which; raise it when they are all meant.
      - A safety net against a declaration that lost its users (an empty variable, a typo in a
        group name).
    type: int
    default: 10
  concurrency:
    description: How many users to handle at the same time.
    type: int
    default: 8
attributes:
  check_mode:
    support: full
    description: Reads the server and predicts C(changed) exactly, without changing any user.
  diff_mode:
    support: full
    description: Returns the user's state before and after, per user. Passwords are never included.
notes:
  - A compiled module. The collection ships it as static binaries for Linux on x86_64 and aarch64, and
    its action plugin runs the one that fits the managed host (from the facts C(ansible_facts.system)
    and C(ansible_facts.architecture), or one C(uname -sm) when the play gathers no facts). No Python
    is needed on the managed host. Any other platform fails before anything is copied or run.
author:
  # The project has no public address, so no GitHub handle, yet (see the collection's README).
  - matrix_user team (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Register alice as an admin (an existing alice is reconciled, not an error)
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    registration_shared_secret: "{{ vault_registration_shared_secret }}"
    username: alice
    password: "{{ alice_password }}"
    admin: true
  no_log: true

- name: Keep the declared users in one task
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    registration_shared_secret: "{{ vault_registration_shared_secret }}"
    users:
      - {username: alice, password: "{{ alice_password }}", admin: true}
      - {username: bob, password: "{{ bob_password }}", update_password: always}
      - {username: helpdesk-bot, password: "{{ bot_password }}", user_type: bot}
      - {username: mallory, state: absent}
  no_log: true

- name: Demote bob (no password needed for an existing user)
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    username: bob
    admin: false
  no_log: true

- name: Users that live in MAS (the homeserver delegates authentication to it)
  matrix_user.matrix.matrix_user:
    homeserver: mas
    mas_url: http://127.0.0.1:8080
    mas_client_id: 01J2ZQ3V0Y8D4B6W5X7C9E1F3G
    mas_client_secret_file: /etc/mas/matrix_user_client_secret
    users:
      - {username: alice, password: "{{ alice_password }}", admin: true, email: alice@example.com}
      - {username: ivy, password: "{{ ivy_password }}", emails: [ivy@example.com, ivy.work@example.org]}
      - {username: henry, locked: true}
      - username: carol                    # logs in through the company's identity provider only
        displayname: Carol C.              # at creation; MAS 1.18 or later
        upstream_links: [{provider: Company SSO, subject: "carol@example.com"}]
      - {username: build-bot, password: "{{ bot_password }}", mas_skip_password_check: true}
      - {username: mallory, state: absent}
  no_log: true

- name: Restrict accounts on Synapse without deactivating them
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    users:
      - {username: eve, locked: true}
      - {username: spammer, shadow_banned: true}
      - {username: troll, suspended: true}
      - {username: alice, locked: false, suspended: false}
  no_log: true

- name: Let bots send without Synapse's rate limit, and give one its own limit
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    users:
      - {username: bridge-bot, ratelimit: unlimited}
      - {username: alerts-bot, ratelimit: {messages_per_second: 5, burst_count: 10}}
      - {username: retired-bot, ratelimit: default}
  no_log: true

- name: Join the support team to their rooms (joins only; a room removed from the list is not left)
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    registration_shared_secret: "{{ synapse_registration_shared_secret }}"
    users:
      - {username: alice, rooms: ["#support:example.com", "#announcements:example.com"]}
      - {username: helpdesk-bot, user_type: bot, rooms: ["!AbCdEfGhIjKlMnOp:example.com"]}
  no_log: true

- name: Give users their e-mail addresses and the SSO identities their logins land on
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    users:
      - username: alice
        emails: [alice@example.com, a.smith@example.org]
        external_ids:
          - {auth_provider: oidc-github, external_id: "583231"}
      - {username: bob, emails: [], external_ids: []}   # removes all of them
  no_log: true

- name: Lock every account the list does not declare, except the bridges' puppets
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    users:
      - {username: alice, password: "{{ alice_password }}"}
      - {username: bob, password: "{{ bob_password }}"}
    undeclared: lock
    undeclared_ignore: ["_discord_.*", "monitoring"]
    undeclared_max: 5
  no_log: true

- name: Give bots avatars, one uploaded from a file on the managed host (once per content)
  matrix_user.matrix.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ synapse_admin_token }}"
    users:
      - {username: bridge-bot, avatar: /srv/matrix/avatars/bridge-bot.png}
      - {username: alerts-bot, avatar: "mxc://example.com/AbCdEfGhIjKlMnOp"}
  no_log: true
'''

RETURN = r'''
msg:
  description: What happened, one line. For a list it is a count, and on failure it names each failed user.
  returned: always
  type: str
  sample: "@alice:example.com: created"
undeclared:
  description:
    - With O(undeclared) other than V(keep), the undeclared accounts this run locked or deactivated
      (in check mode, would have); each also has its entry in RV(users), after the declared ones.
      Empty when there are none left to touch.
  returned: when O(undeclared) is lock or deactivate
  type: list
  elements: str
  sample: ["@eve:example.com"]
users:
  description: One entry per declared user, in the order they were declared, then one per undeclared account O(undeclared) touches.
  returned: always
  type: list
  elements: dict
  contains:
    user_id:
      description: The full Matrix ID.
      type: str
      sample: "@alice:example.com"
    changed:
      description: Whether this user was changed (in check mode, whether it would be).
      type: bool
    failed:
      description: Whether this user could not be reconciled.
      type: bool
    actions:
      description:
        - What was done, in order (empty when the user was already as declared).
        - For a failed user, what is known to have landed before the failure (on MAS, a user
          created and then deactivated because MAS refused its password reports
          C([created, deactivated])); else empty.
      type: list
      elements: str
      sample: [created]
    msg:
      description:
        - "The user's outcome in words, for example C(created), C(promoted), C(demoted), C(already
          as declared), C(already absent), C(would be created) (check mode), C(failed: ...), or
          C(failed after changing part of it ...) when part of the change landed before the
          failure (it goes on to say to run again to finish, then the reason)."
      type: str
waited:
  description:
    - How long the run waited for the server's rate limits (the pauses its 429 answers asked for),
      and why. Only with MAS, when its login limit held back password checks; the seconds are
      summed over the checks made at the same time.
  returned: when the run waited
  type: dict
  contains:
    seconds:
      description: The seconds waited.
      type: int
    reason:
      description: Which limit, and how to raise it.
      type: str
'''
