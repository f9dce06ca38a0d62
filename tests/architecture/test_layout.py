"""Module boundaries that import-linter cannot express (it ignores external subpackages)."""

from __future__ import annotations

import re
from pathlib import Path

import fedquery

PACKAGE = Path(fedquery.__file__).parent
FLIGHT = re.compile(r"^\s*(import pyarrow\.flight|from pyarrow import flight|"
                    r"from pyarrow\.flight import)", re.M)
NOISE = re.compile(r"^\s*(import random\b|from random import|.*numpy\.random|.*np\.random)", re.M)


def _sources():
    return [p for p in PACKAGE.rglob("*.py")]


def test_flight_only_in_transport():
    offenders = [str(p.relative_to(PACKAGE)) for p in _sources()
                 if FLIGHT.search(p.read_text()) and p.relative_to(PACKAGE).parts[0]
                 not in ("transport",)]
    assert offenders == [], f"pyarrow.flight imported outside transport/: {offenders}"


def test_no_random_noise_outside_demo_data():
    """All noise comes from OpenDP; numpy's generator is allowed only for synthetic data."""
    offenders = [str(p.relative_to(PACKAGE)) for p in _sources()
                 if NOISE.search(p.read_text()) and p.relative_to(PACKAGE).parts[0] != "demo"]
    assert offenders == [], f"random/numpy.random used outside demo/: {offenders}"
