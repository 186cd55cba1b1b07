"""Edges of the system: the event store on PostgreSQL, crypto, wire encoding, the CLI."""
