# Copyright: matrix_user team
# Apache License 2.0 (see the collection's LICENSE)
"""Runs the module matrix_registration_token: the same binary as matrix_user
(see plugins/action/matrix_user.py), told which module it is."""

from __future__ import annotations

from ansible_collections.matrix_user.matrix.plugins.action.matrix_user import ActionModule as MatrixUserAction


class ActionModule(MatrixUserAction):

    MODULE = 'matrix_registration_token'
