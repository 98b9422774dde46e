"""Every setting of the relay, declared once, and where each value comes from.

``config.py`` declares them, as the fields of RelayConfig (with ``declare.py``'s
``setting(...)``, and ``convert.py``'s converters and checks); ``table.py`` derives
the table of settings from those fields; ``resolve.py`` reads flags, environment
and TOML file in that order of precedence; ``address.py`` parses the API's address;
``example.py`` writes the example file. Nothing here imports trio, nor the api,
daemon, cli or client packages.
"""
