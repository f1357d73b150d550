"""Minimal shim so that legacy tools (``python setup.py ...``) still work; see pyproject.toml."""

from __future__ import annotations

from setuptools import setup

setup()
