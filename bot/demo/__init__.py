"""``superfan demo`` and ``superfan run --sandbox``: the real app against local LINE/Discord emulators.

``community`` simulates a creator's fan community (rows with a hidden archetype per account);
the demo drives those rows through the real adapters.
"""
