"""Compile gnetpy's hot modules with mypyc; a failed C build leaves the pure-Python modules (optional extensions).

    python build_tools/setup_mypyc.py build_ext --inplace
"""
import os
import sys

from setuptools import setup
from mypyc.build import mypycify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(os.path.join(ROOT, "src"))
MODULES = os.environ.get("GNETPY_MYPYC_MODULES", "eventloop,buffer,conn,lifecycle").split(",")

exts = mypycify([f"gnetpy/{m}.py" for m in MODULES])
for ext in exts:
    ext.optional = True  # no C compiler: a warning, and the pure-Python modules
setup(name="gnetpy-mypyc-probe", packages=[], ext_modules=exts, script_args=sys.argv[1:])
