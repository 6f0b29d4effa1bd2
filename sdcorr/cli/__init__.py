"""The ``sdcorr`` command: parsing, one module per command, and turning errors into one line."""
