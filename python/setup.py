"""Copies the project's C ABI library into the package, so an installed `dilatron` needs no path.

The library comes from DILATRON_LIBRARY when set, else from the project's build (../build/lib, what
scripts/setup.sh builds). Without either the package installs without it and looks for the library at
import time (docs/PYTHON.md, "Finding the library").
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def built_library():
    explicit = os.environ.get("DILATRON_LIBRARY")
    if explicit:
        if not os.path.isfile(explicit):
            raise SystemExit(f"DILATRON_LIBRARY={explicit} is not a file")
        return explicit
    found = sorted(glob.glob(os.path.join(HERE, "..", "build", "lib", "libdilatron_c.so*")))
    return found[-1] if found else None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = built_library()
        if library:
            target = os.path.join(self.build_lib, "dilatron", "lib")
            os.makedirs(target, exist_ok=True)
            shutil.copy2(os.path.realpath(library), os.path.join(target, "libdilatron_c.so"))


setup(cmdclass={"build_py": BuildWithLibrary})
