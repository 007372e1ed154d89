"""Discord side of superfan: discord.py wiring, kept apart from the transport-neutral CRM."""
