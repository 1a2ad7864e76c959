"""What a wheel records about how it was made, and the tiny reader it carries.

The JSON goes into the wheel's ``.dist-info`` as ``volta_provenance.json``:
after ``pip install`` it is readable without importing vllm (which needs
torch and a GPU stack), e.g.::

    python -c "import importlib.metadata as m; print(m.distribution('vllm').read_text('volta_provenance.json'))"

The wheel also carries ``vllm/_volta_provenance.py``, whose ``read()`` does
the same from inside a program. No absolute path of the build host is
recorded.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

SCHEMA = 1
FILENAME = "volta_provenance.json"
READER_PATH = "vllm/_volta_provenance.py"

READER = '''\
"""How this vllm wheel was built, as recorded by vllm-volta.

``read()`` returns the record (a dict); ``python -m vllm._volta_provenance``
prints it (that imports the vllm package, so vllm's dependencies must be
installed). Without them, read the metadata directly:
python -c "import importlib.metadata as m; print(m.distribution('vllm').read_text('volta_provenance.json'))"
"""
import json
from importlib import metadata

FILENAME = "volta_provenance.json"


def read(distribution="vllm"):
    text = metadata.distribution(distribution).read_text(FILENAME)
    if text is None:
        raise LookupError(f"{distribution} has no {FILENAME}: not a vllm-volta build")
    return json.loads(text)


def main():
    print(json.dumps(read(), indent=2))


if __name__ == "__main__":
    main()
'''


def build_record(*, version: str, route: str, upstream: dict, series: dict, kernels: dict,
                 toolchain: dict, tool_version: str) -> dict:
    return {
        "schema": SCHEMA,
        "distribution": "vllm",
        "version": version,
        "kernel_route": route,
        "upstream": upstream,
        "series": series,
        "kernels": kernels,
        "toolchain": toolchain,
        "built": {
            "by": f"vllm-volta {tool_version}",
            "at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def dumps(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=False) + "\n").encode()


def wheel_files(info_dir: str, record: dict) -> dict[str, bytes]:
    return {f"{info_dir}/{FILENAME}": dumps(record), READER_PATH: READER.encode()}


def read_wheel(wheel: Path) -> dict:
    import zipfile

    from .wheelfile import dist_info
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(f"{dist_info(zf)}/{FILENAME}"))


def read_installed(distribution: str = "vllm") -> dict:
    from importlib import metadata
    text = metadata.distribution(distribution).read_text(FILENAME)
    if text is None:
        raise LookupError(f"the installed {distribution} has no {FILENAME}: not a vllm-volta build")
    return json.loads(text)
