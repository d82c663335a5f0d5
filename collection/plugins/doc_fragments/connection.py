# Copyright: matrix_user team
# Apache License 2.0 (see the collection's LICENSE)
#
# The connection, authentication, TLS and timeout options every module of
# the collection shares (one binary reads them with the same code).

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  homeserver:
    description: Which server holds the accounts (and the registration tokens).
    type: str
    choices:
    - synapse
    - dendrite
    - mas
    default: synapse
  homeserver_url:
    description:
    - Base URL of the homeserver's client API, for example C(http://127.0.0.1:8008) or C(https://matrix.example.com).
      Required unless O(homeserver=mas).
    - With O(homeserver=mas), optional - the homeserver behind MAS (with the same server name). Only
      M(matrix_user.matrix.matrix_user) asks it, and only for the display names MAS cannot show, so that a changed
      O(matrix_user.matrix.matrix_user#module:displayname) of an existing user is found and refused rather than
      reported as matching; without it, those are not compared. Asked only when a present user declares
      O(matrix_user.matrix.matrix_user#module:displayname), first once before anything is written (that user's
      profile) - a homeserver that does not answer, is not a homeserver, or shows profiles only to signed-in users
      (Synapse's C(require_auth_for_profile_requests); the module has no token the homeserver takes) fails the run
      then, with a message that says which. O(validate_certs), O(ca_path), O(timeout) and O(wait_timeout) apply to
      it as to MAS. Synapse allows 500 profile reads from one address, then one a second by default (its
      C(rc_profile)); the module waits those out within O(wait_timeout).
      M(matrix_user.matrix.matrix_registration_token) never sends it a request.
    type: str
  server_name:
    description:
    - The homeserver's server name (the part after C(:) in user IDs). It is normally discovered, so set it only
      when you want the module to check it. A mismatch fails before any change.
    type: str
  registration_shared_secret:
    description:
    - The homeserver's C(registration_shared_secret) (Synapse and Dendrite; MAS does not use it). Without
      O(admin_token), the module registers its service account with it and acts as that account.
      M(matrix_user.matrix.matrix_user) also registers the users it creates with it, even with O(admin_token) (on
      Dendrite, the only way to create users).
    - Mutually exclusive with O(registration_shared_secret_file).
    type: str
  registration_shared_secret_file:
    description:
    - A file on the managed host that holds the shared secret.
    - The file must be a regular file of at most 16 KiB (a FIFO, a device such as C(/dev/zero), or a larger file
      is refused by name, before anything is sent); it is read whole, less one trailing line break (C(\n) or C(\r\n),
      as C(echo) and editors leave one - a second one is part of the secret). A file every user of the host can
      read is used, with a warning in the result (make it readable only by its owner, as ssh asks of a private key).
    type: path
  admin_token:
    description:
    - An access token of a server admin (for MAS, a token with the C(urn:mas:admin) scope). When it is given, the
      module uses it instead of its service account.
    - Mutually exclusive with O(admin_token_file).
    type: str
  admin_token_file:
    description:
    - A file on the managed host that holds O(admin_token).
    - The file must be a regular file of at most 16 KiB (a FIFO, a device such as C(/dev/zero), or a larger file
      is refused by name, before anything is sent); it is read whole, less one trailing line break (C(\n) or C(\r\n),
      as C(echo) and editors leave one - a second one is part of the secret). A file every user of the host can
      read is used, with a warning in the result (make it readable only by its owner, as ssh asks of a private key).
    type: path
  service_account:
    description:
    - The localpart of the account that the module registers for itself when it has only the shared secret (Synapse,
      Dendrite). While M(matrix_user.matrix.matrix_user) acts as it, declaring the account among
      O(matrix_user.matrix.matrix_user#module:users) fails before anything is sent.
    type: str
    default: matrix-user-service
  token_cache_dir:
    description:
    - The folder on the managed host where the service account's token is kept between runs, in a file (mode 0600)
      readable only by the user that runs the module. Used only with O(registration_shared_secret) and no O(admin_token).
    - A missing folder is created with mode 0700. An existing folder that belongs to another user, or that its group
      or others can write, is refused before anything is sent (it is never changed - make it private with C(chmod
      700), or choose another folder). The token is written to a new file of a name no one can guess and then renamed
      into place, so a symbolic link planted in the folder is never written through; a cache file that is a symbolic
      link, a FIFO, a device or larger than 16 KiB is refused, not read.
    - A folder the token cannot be written to fails before the service account is registered or logged in.
    - The default is C($XDG_CACHE_HOME/matrix_user) (when C(XDG_CACHE_HOME) is an absolute path), else C($HOME/.cache/matrix_user).
      With neither variable set the module fails and asks for O(token_cache_dir); it never falls back to a shared
      folder such as C(/tmp).
    type: path
    default: $XDG_CACHE_HOME/matrix_user, else ~/.cache/matrix_user
  mas_url:
    description: MAS only. The base URL of the Matrix Authentication Service. Required with O(homeserver=mas).
    type: str
  mas_client_id:
    description:
    - MAS only. The ID of an OAuth2 client that MAS's configuration lists under C(clients) and C(policy.data.admin_clients).
      The module uses the client-credentials grant with the C(urn:mas:admin) scope.
    type: str
  mas_client_secret:
    description: MAS only. The secret of O(mas_client_id). Mutually exclusive with O(mas_client_secret_file).
    type: str
  mas_client_secret_file:
    description:
    - A file on the managed host that holds O(mas_client_secret).
    - The file must be a regular file of at most 16 KiB (a FIFO, a device such as C(/dev/zero), or a larger file
      is refused by name, before anything is sent); it is read whole, less one trailing line break (C(\n) or C(\r\n),
      as C(echo) and editors leave one - a second one is part of the secret). A file every user of the host can
      read is used, with a warning in the result (make it readable only by its owner, as ssh asks of a private key).
    type: path
  validate_certs:
    description:
    - Whether to verify the server's TLS certificate (its issuer, its name and its dates).
    - 'Trusted are the CA certificates of the managed host, found as OpenSSL finds them: the C(SSL_CERT_FILE) file
      (else the system''s bundle, e.g. C(/etc/ssl/certs/ca-certificates.crt) or C(/etc/pki/tls/certs/ca-bundle.crt))
      and every certificate file in the C(SSL_CERT_DIR) folders (C(:)-separated; else C(/etc/ssl/certs) or C(/etc/pki/tls/certs)),
      plus O(ca_path). Each variable replaces only its own default. The Mozilla roots built into the module are
      used only on a host where none of these holds a certificate (a minimal container), so removing a CA from the
      host''s store is obeyed.'
    - A refused certificate fails at once (it is not retried for O(wait_timeout)), with a message that says why
      - an issuer the host does not trust, a name that is not homeserver_url's host, an expired or not yet valid
      certificate - and what to set.
    - C(false) accepts any certificate; use it only on a network you trust.
    type: bool
    default: true
  ca_path:
    description:
    - A PEM file of CA certificates to trust in addition to the host's (see O(validate_certs)), for a homeserver
      whose certificate comes from a private CA. Every certificate in the file is trusted, so a bundle works. A
      file without any PEM certificate is refused before anything is sent, even with O(validate_certs=false), as
      is one that is not a regular file (a FIFO, a device) or larger than 10 MiB.
    - A self-signed server certificate can be given here only if it is not marked as a CA. C(openssl req -x509)
      marks it as one by default (C(basicConstraints CA:TRUE)), and the TLS library the module uses (rustls) never
      accepts a CA certificate as a server's own, so the module says so and fails. Make such a certificate with
      C(-addext basicConstraints=critical,CA:FALSE -addext subjectAltName=DNS:your.host), or better issue the server's
      certificate from a CA and give that CA here.
    type: path
  timeout:
    description: Seconds to wait for any single answer from the server.
    type: int
    default: 30
  wait_timeout:
    description:
    - Seconds to keep retrying while the server is unreachable or still starting (connection refused; 502, 503 or
      504 to a read), or while it rate-limits us (429, after the delay it asks for). A write that gets 502, 503
      or 504 is not resent (it may have been carried out); the module reads the server instead, see the description.
    type: int
    default: 60
'''
