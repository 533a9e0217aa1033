"""Wire format helpers: the hot-path parser and prepared answers."""
