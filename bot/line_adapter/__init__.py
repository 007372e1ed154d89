"""LINE side of superfan: signed webhook in, cost-aware replies out (see ``adapter.py``)."""

from bot.line_adapter.adapter import LineAdapter

__all__ = ["LineAdapter"]
