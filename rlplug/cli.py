"""The ``rlplug`` command: the composition root, which hands the application the demo's
built-in task. It is the one module that imports every floor."""

from __future__ import annotations

import argparse
import json
import sys

from rlplug.app import new_plugin
from rlplug.core.plugins import describe_plugins, load_failures


def _plugins_command(args: argparse.Namespace) -> int:
    rows = describe_plugins(include_builtins=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            label = row["entry_point"] or row["module"]
            print(f"{row['name']} {row['version']} ({label})")
            for kind, names in row["components"].items():
                print(f"  {kind}: {', '.join(names)}")
    for message in load_failures().values():
        print(message, file=sys.stderr)
    return 0


def train(argv: list[str] | None = None) -> int:
    """``rlplug train ARGS``, with the built-in task where the config names no model or dataset."""
    from rlplug.app.train import main as train_main
    from rlplug.demo import BUILTIN_TASK

    return train_main(argv, builtin=BUILTIN_TASK)


def train_reward_model(argv: list[str] | None = None) -> int:
    """``rlplug train-rm ARGS``, with the built-in task's tiny reward model where no model is named."""
    from rlplug.app.reward_model import train_rm_main
    from rlplug.demo import BUILTIN_TASK

    return train_rm_main(argv, builtin=BUILTIN_TASK)


# Commands that parse their own arguments (TRL-style `--field value` overrides).
PASS_THROUGH_COMMANDS = {"train": train, "train-rm": train_reward_model}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in PASS_THROUGH_COMMANDS:
        return PASS_THROUGH_COMMANDS[argv[0]](argv[1:])
    parser = argparse.ArgumentParser(prog="rlplug", description="RL post-training plugins on TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train with a config (rlplug train --help)")
    commands.add_parser("train-rm", help="train a reward model with TRL's RewardTrainer (rlplug train-rm --help)")
    listing = commands.add_parser("plugins", help="list installed plugins and their components")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--all", action="store_true", help="include the built-in components")
    listing.set_defaults(handler=_plugins_command)
    scaffold = commands.add_parser("new-plugin", help="generate rlplug-NAME/, a plugin package with a passing test")
    new_plugin.add_arguments(scaffold)
    scaffold.set_defaults(handler=new_plugin.run)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
