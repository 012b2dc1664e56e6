"""Offline stand-in for ansible-test's pip bootstrap script.

ansible-test downloads get-pip.py from a host this network cannot reach; this
does the same job with the interpreter's bundled ensurepip, then installs the
requested packages through the configured package index.
"""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
