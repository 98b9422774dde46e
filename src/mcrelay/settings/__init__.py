"""Every setting of the relay: declared once, read from flags, environment and file."""
