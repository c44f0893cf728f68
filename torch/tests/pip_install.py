"""`pip install .` of the checkout, the way a Python user installs: a fresh venv (seeing the
system's torch through --system-site-packages), pip building the package with CMake (setup.py),
then `import smyrf_torch` and one forward and backward from another directory, with no
PYTHONPATH.

    python3 torch/tests/pip_install.py REPOSITORY_ROOT

pip builds in a temporary copy of the checkout's files (tracked and untracked, not ignored), so
the checkout's own build directories neither leak into the package nor get written to.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK = """
import torch, smyrf_torch
assert 'site-packages' in smyrf_torch.__file__, smyrf_torch.__file__
q, k, v = (torch.randn(1, 2, 9, 4, requires_grad=True) for _ in range(3))
o = smyrf_torch.attention(q, k, v, "smyrf/lsh", n_hashes=2, q_cluster_size=3, k_cluster_size=3)
o.sum().backward()
assert q.grad is not None and torch.isfinite(q.grad).all()
print("smyrf_torch", smyrf_torch.__file__, "forms:", len(smyrf_torch.methods()))
"""


def checkout_files(root):
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (root / p).is_file()]


def main():
    root = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(prefix="smyrf-pip-") as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        for rel in checkout_files(root):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, src / rel)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")],
                       check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["SMYRF_BUILD_JOBS"] = str(os.cpu_count() or 1)
        python = tmp / "venv" / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                        "--no-input", "-q", str(src)], check=True, env=env)
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        subprocess.run([str(python), "-c", CHECK], check=True, env=env, cwd=elsewhere)


if __name__ == "__main__":
    main()
