"""Pack claudy's library into one tar archive, on the controller: pack_claudy_library.py ARCHIVE MODULE_UTILS_DIR.

The module_utils *.py files go under ansible_collections/hal9000/dind/plugins/module_utils/, with an empty
__init__.py at every level above (regular packages: another ansible_collections on sys.path never shadows them).
tarfile rather than the tar command: one archive with those empty files needs no scratch tree. Every member is
root's, mode 0644, and keeps a fixed mtime (its source's), so the unarchive module finds an unchanged library
unchanged. No directory entries: compiling the library changes its directories' mtimes.
"""

import os
import sys
import tarfile

PACKAGE = "ansible_collections/hal9000/dind/plugins/module_utils"


def member(name, size, mtime):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def main(archive, source):
    modules = sorted(name for name in os.listdir(source) if name.endswith(".py"))
    marker_mtime = int(os.stat(os.path.join(source, "__init__.py")).st_mtime)
    levels = PACKAGE.split("/")[:-1]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for depth in range(1, len(levels) + 1):
            tar.addfile(member("/".join(levels[:depth]) + "/__init__.py", 0, marker_mtime))
        for name in modules:
            path = os.path.join(source, name)
            status = os.stat(path)
            with open(path, "rb") as handle:
                tar.addfile(member(f"{PACKAGE}/{name}", status.st_size, int(status.st_mtime)), handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
