"""The local control API: Quart-Trio, served by hypercorn inside the daemon's Trio run."""
