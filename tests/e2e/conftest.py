"""The e2e tests run the operator as the operator's cluster tests do."""

from __future__ import annotations

from ..operator.conftest import operator

__all__ = ["operator"]
