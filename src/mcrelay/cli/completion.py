"""``mcrelay completion SHELL``: a completion script for bash, zsh or fish.

The script is made by shtab from the command's own parser when asked, so it always
matches the installed version: every command, flag and choice, and file names
where a flag takes a path.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from mcrelay.cli.environment import Environment
from mcrelay.cli.options import Parser
from mcrelay.cli.status import ExitStatus

SHELLS = ("bash", "zsh", "fish")
INSTALL = """\
to install it for yourself:
  bash: mcrelay completion bash > ~/.local/share/bash-completion/completions/mcrelay
  zsh:  mcrelay completion zsh > ~/.zfunc/_mcrelay   (with fpath+=~/.zfunc before compinit)
  fish: mcrelay completion fish > ~/.config/fish/completions/mcrelay.fish
"""


def add_parser(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    del environ  # the script does not depend on it
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        epilog=INSTALL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    completion.set_defaults(command=run_completion)


async def run_completion(args: argparse.Namespace, env: Environment) -> ExitStatus:
    import shtab

    from mcrelay.cli.main import build_parser

    parser = build_parser(env)
    _complete_paths_as_files(parser, shtab.FILE)
    print(shtab.complete(parser, shell=args.shell), file=env.stdout)
    return ExitStatus.OK


def _complete_paths_as_files(parser: argparse.ArgumentParser, files: object) -> None:
    """Mark every argument that takes a path (of any subcommand) for file-name completion."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _complete_paths_as_files(subparser, files)
        elif getattr(action.type, "__name__", None) == "Path":
            action.complete = files  # type: ignore[attr-defined]  # read by shtab
