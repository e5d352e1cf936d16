"""Importers for real data files: JEPX prices (market.prices), TSO area supply-demand,
measured load profiles, EV charging sessions.  Each error names file, line and column."""
