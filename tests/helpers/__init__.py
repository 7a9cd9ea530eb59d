"""Support code for the tests (no tests here): toy classifiers, a tiny user zoo, fake CUDA, a local
Google Drive, the CLI driver and small results frames.

Test files import these modules, never each other; the fixtures built on them live in
``tests/conftest.py``.
"""
