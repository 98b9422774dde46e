"""The parser the manual page is made from (``make man``, with argparse-manpage).

The same parser as the command's, built without the environment (so a builder's
MCRELAY_* variables do not become the page's defaults), with the sections a manual
page has beyond the options: exit status, environment and files.
"""

import argparse

from mcrelay.cli.environment import Environment
from mcrelay.cli.main import build_parser
from mcrelay.cli.status import MEANINGS
from mcrelay.daemon.banfile import BANS_FILE_PREFIX
from mcrelay.settings.resolve import DEFAULT_CONFIG_FILE


def manual_parser() -> argparse.ArgumentParser:
    parser = build_parser(Environment(environ={}))
    parser.epilog = None  # its exit codes have their own section here
    codes = "".join(f".TP\n.B {int(code)}\n{_roff(text)}\n" for code, text in MEANINGS.items())
    sections = {
        "exit status": codes + ".PP\nErrors are one line on stderr, starting "
        "\\fBmcrelay: error:\\fR.",
        "environment": "Each flag can also be set by the variable named beside it, "
        "\\fBMCRELAY_\\fR and the flag's name (\\fB\\-\\-client\\-timeout\\fR: "
        "\\fBMCRELAY_CLIENT_TIMEOUT\\fR). A flag beats its variable; for the daemon, "
        "the variable beats the settings file. \\fBMCRELAY_CONFIG\\fR names that file.",
        "files": f".TP\n.I {_roff(str(DEFAULT_CONFIG_FILE))}\n"
        "The daemon's settings, when it exists and no other file is given.\n"
        f".TP\n.I {_roff(f'$STATE_DIRECTORY/{BANS_FILE_PREFIX}PORT')}\n"
        "The bans (\\fBmcrelay ban\\fR, a kick with a ban) of the relay of that UDP port, kept "
        "across restarts, beside the key files (the directory of \\fB\\-\\-key\\-file\\fR). "
        "A file the daemon cannot use "
        "stops its start (exit 2); removing it lifts every ban.",
    }
    # argparse-manpage adds the sections it finds in this attribute.
    parser._manpage = [  # type: ignore[attr-defined]
        {"heading": heading, "content": content} for heading, content in sections.items()
    ]
    return parser


def _roff(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-")
