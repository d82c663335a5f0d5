# Copyright: matrix_user team
# Apache License 2.0 (see the collection's LICENSE)
"""Runs the build of the compiled module matrix_user that fits the managed host.

The same binary serves every module of the collection (matrix_user,
matrix_registration_token): the action plugin of each, a subclass naming its
module in ``MODULE``, sets the reserved argument ``_matrix_user_module`` to
that name, which is how the binary knows which module the task is
(Ansible's ``_ansible_module_name`` names the binary, not the task's module).

The module is a static binary per supported platform, in the collection's
``binaries/`` folder as ``matrix_user_<system>_<arch>`` (for example
``binaries/matrix_user_linux_aarch64``), documented by
``plugins/modules/matrix_user.py`` (documentation only). The binaries are
kept out of ``plugins/modules/`` so that no tool that reads modules as text
(ansible-doc, ansible-test sanity) has to read them.

This action plugin, named as the module, finds the managed host's system and
architecture, from its facts when the play gathered them, otherwise with one
``uname -sm`` over the connection (a binary module needs no Python on the
host, so neither does this), and runs the matching binary as a binary
module: Ansible copies it to the host and runs it there, with ``become``
when the task asks for it. A host of any other platform fails before
anything is copied or run.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# The name of the binaries, and the argument that says which module runs.
BINARY = 'matrix_user'
MODULE_KEY = '_matrix_user_module'

# <collection>/binaries, from <collection>/plugins/action/matrix_user.py.
BINARIES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'binaries')

# The platforms the collection ships a binary for, as <system>_<arch>.
SUPPORTED_PLATFORMS = ('linux_x86_64', 'linux_aarch64')

# Other spellings of the same architectures (Debian's and Go's names, and
# what macOS's and some BSDs' uname print).
ARCH_ALIASES = {
    'amd64': 'x86_64',
    'x64': 'x86_64',
    'arm64': 'aarch64',
}


def platform_of(system, architecture):
    """``linux_x86_64``-style name of a host's system and architecture."""
    arch = architecture.strip().lower()
    return f'{system.strip().lower()}_{ARCH_ALIASES.get(arch, arch)}'


class ActionModule(ActionBase):

    # The module this action plugin runs; a subclass names its own.
    MODULE = 'matrix_user'

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}

        action = self._task.resolved_action or self._task.action
        system, architecture, source = self._host_platform(task_vars)
        platform = platform_of(system, architecture)
        if platform not in SUPPORTED_PLATFORMS:
            raise AnsibleActionFail(
                f'{action} has no binary for this host: its system is {system!r} and its '
                f'architecture is {architecture!r} (from {source}). Supported: '
                f'{", ".join(SUPPORTED_PLATFORMS)}. Run the task on a host of a supported '
                'platform (delegate_to), or build the module for this one from its source.'
            )

        binary = f'{BINARY}_{platform}'
        if not os.path.isfile(os.path.join(BINARIES_DIR, binary)):
            raise AnsibleActionFail(
                f'{action}: the binary for this host, {os.path.join(BINARIES_DIR, binary)}, is missing. '
                'Reinstall the collection; in a clone of its repository, run `tools/just build`.'
            )
        # Found as a module in a role's library/ is, through the loader's
        # legacy paths (ansible.legacy: a task in a role of a collection
        # searches only collections otherwise); this lasts for this task only
        # (each task runs in a worker process of its own).
        self._shared_loader_obj.module_loader.add_directory(BINARIES_DIR)
        # Set whatever the task gave: the module is the task's, not an option.
        module_args = dict(self._task.args, **{MODULE_KEY: self.MODULE})
        result.update(
            self._execute_module(
                module_name=f'ansible.legacy.{binary}',
                module_args=module_args,
                task_vars=task_vars,
                wrap_async=self._task.async_val,
            )
        )
        return result

    def _host_platform(self, task_vars):
        """(system, architecture, where they came from) of the managed host."""
        # With delegate_to, the facts in task_vars are the inventory host's,
        # not the host the connection reaches: ask that host itself.
        if not self._task.delegate_to:
            facts = task_vars.get('ansible_facts', {})
            if facts.get('system') and facts.get('architecture'):
                for name in ('system', 'architecture'):
                    if not isinstance(facts[name], str):
                        raise AnsibleActionFail(
                            f'the managed host\'s fact ansible_facts.{name} (ansible_{name}) is {facts[name]!r}, '
                            f'which is not a string: a name such as '
                            f'{"Linux" if name == "system" else "x86_64"!r} is expected. Something '
                            'set it (set_fact, a fact cache, a custom facts module): remove that, '
                            'or gather the facts again (ansible.builtin.setup).'
                        )
                return facts['system'], facts['architecture'], 'its facts'
        return self._uname()

    def _uname(self):
        reply = self._low_level_execute_command('uname -sm', sudoable=False)
        words = reply.get('stdout', '').split()
        if reply.get('rc') != 0 or len(words) != 2:
            raise AnsibleActionFail(
                'could not find the managed host\'s system and architecture: '
                f'`uname -sm` answered rc={reply.get("rc")}, stdout={reply.get("stdout", "")!r}, '
                f'stderr={reply.get("stderr", "")!r}. Gather facts for the play '
                '(gather_facts: true) or make uname available on the host.'
            )
        return words[0], words[1], '`uname -sm` on the host'
