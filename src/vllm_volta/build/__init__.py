"""The build wing: from a patched vLLM tree to a verified ``vllm 0.9.2+volta.N`` wheel.

Modules, one job each:

- ``toolchain``: find a CUDA 12 toolkit, refuse CUDA 13 (and older than 12).
- ``provision``: make a CUDA 12.4 toolkit in the cache from Debian packages.
- ``cutlass``: CUTLASS headers from PyPI as a local CMake source.
- ``buildenv``: the virtual environment vLLM's setup.py runs in (torch 2.7.0).
- ``stage``: a stable copy of the tree that the build runs in (object reuse).
- ``kernel_rule``: may the upstream wheel's compiled kernels be reused?
- ``upstream_wheel``: PyPI's vllm 0.9.2 wheel, sha256 verified.
- ``version``: the ``+volta.N`` label from the project's setuptools-scm version.
- ``provenance``: what the wheel records about how it was made.
- ``wheelfile``: add files to a wheel and rewrite its RECORD.
- ``runner``: run setup.py with a progress line (``[n/43]``, elapsed time).
- ``verify``: sm_70 code per extension, no host paths, METADATA/RECORD, sha256.
- ``routes``: the source, upstream-kernels and empty routes end to end.
- ``cli``: ``python -m vllm_volta build ...``.
"""
