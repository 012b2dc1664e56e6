#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: home
short_description: The HAL-9000 home on the Docker host, its directories and hal9000.conf
version_added: 0.1.0
description:
  - Makes the HAL-9000 home (C(~/.hal9000), mounted into the parent at C(/root/.hal9000)), the directories below it
    and C(config/hal9000.conf), the C(KEY=value) settings the parent reads at start-up, in one step.
  - Directories get O(mode); the configuration file is written atomically with mode C(0600) and only when its content
    differs. Nothing else in the home (backups, secrets, directories not listed) is touched.
  - Everything is validated before the first directory is made or removed. Every entry of O(directories) must stay
    below O(path) (no absolute path, no C(.) or C(..) part).
  - No symbolic link is followed. When O(path), a directory of the layout (or a level of it) or C(config/hal9000.conf)
    is a symbolic link, the module fails naming the link and changes nothing; remove the link (or make it a real
    directory) and run again. As root, a planted link would otherwise be chmodded, written or emptied through.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  path:
    description: The home directory on the Docker host.
    type: path
    default: ~/.hal9000
  state:
    description:
      - V(present) makes the home, the O(directories) and C(hal9000.conf).
      - V(absent) removes the O(directories) (with their content) and nothing else of the home; O(settings) and O(mode)
        are not used. It refuses directories that hold data kept across clean-ups (C(backups), C(secrets), C(migration),
        C(claude), C(chromadb), C(membank), C(plugins), C(volume-exports-*) and what a rollback kept aside).
    type: str
    choices: [present, absent]
    default: present
  directories:
    description:
      - Directories to create (or remove) below O(path), as relative paths. With O(state=present), C(config) is always
        created (it holds C(hal9000.conf)).
    type: list
    elements: str
    default: [sessions, logs, config, workers]
  mode:
    description: Mode of the home and of every directory listed, as an octal string.
    type: str
    default: "0700"
  settings:
    description:
      - The settings written to C(config/hal9000.conf), one C(KEY=value) line each, in key order.
      - Keys are the settings the collection declares (C(WORKER_MEMORY), C(WORKER_CPUS), C(WORKER_PIDS_LIMIT), C(WORKER_IMAGE),
        C(SKIP_IMAGE_PULL), C(LAZY_IMAGE_PULL), C(ENABLE_POOL_MANAGER), C(MIN_WARM_WORKERS), C(MAX_WARM_WORKERS),
        C(IDLE_TIMEOUT), C(CHROMADB_PORT), C(ENABLE_MCP_RELAY), C(MCP_IMAGE), C(MCP_RELAY_PORT), C(ANTHROPIC_BASE_URL),
        C(SESSION_RECORDS_MAX_AGE)); each value is checked as its readers check it (a bad size, an unknown key or
        a minimum above the maximum fails before anything is written). Booleans are written C(true)/C(false).
      - Every reader (the parent, the worker module, C(coordinator spawn), the pool manager) takes a setting from here
        unless it was given explicitly; settings left out take the seed's defaults.
    type: dict
    default: {}
attributes:
  check_mode:
    description: Reports what would be created, written or removed and changes nothing; refusals happen as in a real run.
    support: full
  diff_mode:
    description: Shows C(hal9000.conf) before and after (with O(state=present)).
    support: full
  idempotent:
    description: A second run with the same options changes nothing.
    support: full
notes:
  - Runs on the Docker host, as the user whose home it is (or root); the parent mounts the directory as it is.
"""

EXAMPLES = r"""
- name: Lay out ~/.hal9000 and write its settings
  hal9000.dind.home:
    settings:
      WORKER_MEMORY: 4g
      ENABLE_POOL_MANAGER: false
      MIN_WARM_WORKERS: 2

- name: A second installation's home
  hal9000.dind.home:
    path: /srv/hal9000-team-b
    mode: "0750"

- name: Remove the generated layout (backups and secrets stay)
  hal9000.dind.home:
    state: absent
    directories: [sessions, logs, config, workers]
"""

RETURN = r"""
path:
  description: The home directory, with C(~) expanded.
  returned: always
  type: str
  sample: /root/.hal9000
config_file:
  description: The path of C(hal9000.conf).
  returned: always
  type: str
  sample: /root/.hal9000/config/hal9000.conf
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample: ["created /root/.hal9000/logs", "wrote /root/.hal9000/config/hal9000.conf", "removed /root/.hal9000/logs"]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.constants import CONFIG_FILE, DEFAULT_HOME
from ansible_collections.hal9000.dind.plugins.module_utils.home import LAYOUT, ensure_home, remove_layout


def parse_mode(text):
    try:
        mode = int(str(text), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise Hal9000Error(f"mode {text!r} is not an octal file mode such as 0700.")
    return mode


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default=DEFAULT_HOME),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            directories=dict(type="list", elements="str", default=list(LAYOUT)),
            mode=dict(type="str", default="0700"),
            settings=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    params = module.params
    home = params["path"]
    config = os.path.join(home, CONFIG_FILE)
    previous = text = None
    try:
        if params["state"] == "absent":
            actions = remove_layout(home, params["directories"], module.check_mode)
        else:
            actions, previous, text = ensure_home(home, params["directories"], params["settings"], module.check_mode,
                                                  parse_mode(params["mode"]))
    except Hal9000Error as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        doing = "clean" if params["state"] == "absent" else "lay out"
        where = f" ({exc.filename})" if exc.filename else ""
        module.fail_json(msg=f"Cannot {doing} {home}: {exc.strerror}{where}; run as its owner or choose another path.")
    result = dict(changed=bool(actions), path=home, config_file=config, actions=actions)
    if module._diff and params["state"] == "present":
        result["diff"] = dict(before=previous or "", after=text, before_header=config, after_header=config)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
