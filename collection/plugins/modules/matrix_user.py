#!/usr/bin/python
# Copyright: matrix_user maintainers
# Apache License 2.0 (see the collection's galaxy.yml)
"""The name of the module matrix_user.matrix.matrix_user, for Ansible to find.

The module is a compiled program with one static binary per platform
(matrix_user_<system>_<arch> beside this file). meta/runtime.yml routes the
name matrix_user to the action plugin matrix_user.matrix.host_binary, which
runs the binary that fits the managed host, so this file never runs there.
Its documentation is the sidecar matrix_user.yml beside it (ansible-doc).
"""

import json
import sys

if __name__ == '__main__':
    print(json.dumps({
        'failed': True,
        'msg': 'matrix_user.matrix.matrix_user runs through the action plugin '
               'matrix_user.matrix.host_binary (meta/runtime.yml), not through this file: '
               'reinstall the collection if its meta/runtime.yml is missing.',
    }))
    sys.exit(1)
