"""Stands in for ansible-test's pip bootstrap script, get-pip.py.

ansible-test makes each sanity test's virtualenv without pip and then runs
get-pip.py in it, which it downloads from ci-files.testing.ansible.com: a
host outside the package registries that CI may reach. It looks for the
script first in ~/.ansible/test/cache/get_pip_<version>.py, the place its own
error message names for a copy saved by hand; tools/check-collection puts
this file there. It does what get-pip.py does for ansible-test: installs pip
(Python's own bundled copy, with ensurepip), then the packages ansible-test
asks for (its pinned pip) from PyPI. The arguments are get-pip.py's: pip
install options and packages, and --no-setuptools/--no-wheel, which pip
install does not take.
"""

import subprocess
import sys

GET_PIP_ONLY = ('--no-setuptools', '--no-wheel')

subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
install = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install', '--upgrade', *install]).returncode)
