"""Shared test setup. Kept minimal; fixtures used by several test files may be appended here."""

import sys
from pathlib import Path

# Lets tests import helper modules that live beside them, e.g. `from tiny_models import ...`.
sys.path.insert(0, str(Path(__file__).parent))
