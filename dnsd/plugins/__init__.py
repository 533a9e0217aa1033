"""One module (or package) per Corefile directive; see ``dnsd.chain`` for the interface."""
