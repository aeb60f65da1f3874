"""collector: Genesys interaction events in; embedded interactions and store rows out."""
