"""Core: clock, environment factory, RNG streams, energy ledger, units, errors."""
