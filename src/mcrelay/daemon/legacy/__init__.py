"""The legacy profile on the relay's side: its datagrams, its RSA work, its key file."""
