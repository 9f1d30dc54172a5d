"""Write deploy/image/requirements.lock: the worker image's dependencies, pinned with
their wheels' sha256, resolved by pip for the image's Python (Debian bookworm's 3.11.2,
glibc 2.36, x86_64) from pyproject.toml's ranges. `make image-lock` runs it; commit the
result. setuptools is there to build the project inside the image (then removed).

    python deploy/image/lock.py > deploy/image/requirements.lock
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLATFORM = [
    "--only-binary=:all:",
    # pip takes the platforms it is given, not the older ones they include.
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
    "--python-version=3.11.2",
    "--implementation=cp",
    "--abi=cp311",
    "--abi=abi3",
    "--abi=none",
]
BUILD = "setuptools>=69,<81"
# redis needs it below Python 3.11.3, which bookworm's 3.11.2 is; pip evaluates markers
# with the Python it runs on, so it is named here.
EXTRA = "async-timeout>=4.0.3,<6"


def main() -> int:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with tempfile.TemporaryDirectory() as target:
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--dry-run",
                "--ignore-installed",
                "--report=-",
                f"--target={target}",
                *PLATFORM,
                *project["dependencies"],
                BUILD,
                EXTRA,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    lines = [
        "# The worker image's dependencies, pinned with hashes (deploy/image/lock.py wrote",
        "# this for Python 3.11.2 on manylinux_2_36_x86_64; `make image-lock` regenerates it).",
    ]
    for item in sorted(json.loads(report)["install"], key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name.lower()}=={version} --hash=sha256:{sha}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
