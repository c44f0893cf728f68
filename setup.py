"""Builds smyrf_torch with CMake: the library and the extension smyrf_torch._C only (Release; no
tests, tools, benchmarks or models), then installs the package laid out by torch/CMakeLists.txt.

The extension is built against the interpreter running pip (its torch and pybind11), so a venv
made with --system-site-packages sees Debian's python3-torch and pybind11. SMYRF_BUILD_JOBS
sets the parallel jobs (default: every core).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def version():
    """The project version of the top-level CMakeLists.txt (one place to change it)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(smyrf VERSION ([0-9.]+)", text).group(1)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            "-DSMYRF_BUILD_TESTS=OFF", "-DSMYRF_BUILD_BENCHMARKS=OFF", "-DSMYRF_BUILD_TOOLS=OFF",
            "-DSMYRF_BUILD_MODELS=OFF", "-DSMYRF_BUILD_FUZZ=OFF", "-DSMYRF_BUILD_TORCH=ON",
            "-DSMYRF_BUILD_VIT=OFF", f"-DSMYRF_TORCH_PYTHON={sys.executable}"])
        jobs = os.environ.get("SMYRF_BUILD_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target",
                               "smyrf_torch_python", "-j", jobs])
        # torch/CMakeLists.txt lays the package out (extension and Python files) here.
        package = build_dir / "torch" / "python" / "smyrf_torch"
        if not (package / "__init__.py").exists():
            raise RuntimeError(f"{package}: not built; CMake skipped the Python package "
                               "(torch or pybind11 missing for this interpreter?)")
        built = sorted(package.glob("_C*.so"))
        if not built:
            raise RuntimeError(f"{package}: no extension _C*.so was built")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    version=version(),
    packages=["smyrf_torch"],
    package_dir={"smyrf_torch": "torch/python/smyrf_torch"},
    ext_modules=[CMakeExtension("smyrf_torch._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
