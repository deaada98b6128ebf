"""Compile gnetpy's hot modules with Cython in pure-Python mode (the .py files unchanged).

    python build_tools/setup_cython.py build_ext --inplace
"""
import os
import sys

from setuptools import Extension, setup
from Cython.Build import cythonize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
MODULES = os.environ.get("GNETPY_CY_MODULES", "eventloop,buffer,conn,lifecycle").split(",")

exts = [Extension(f"gnetpy.{m}", [f"src/gnetpy/{m}.py"]) for m in MODULES]
setup(
    name="gnetpy-cython-probe",
    package_dir={"": "src"},
    ext_modules=cythonize(exts, language_level=3, nthreads=1, quiet=True,
                          compiler_directives={"binding": True}),
    script_args=sys.argv[1:],
)
