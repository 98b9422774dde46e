"""The relay daemon: sockets, client registry, reassembly and fan-out on Trio."""
