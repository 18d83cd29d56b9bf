"""The one way every command line reports a user mistake: ``error: <where>: <what>``, exit 2.

A user mistake is a `errors.UserError` (`LocatedError`: a bad file, line, record, config key or
flag), a missing or unreadable file (`FileNotFoundError`, `PermissionError`, ...), a bad
command-line flag (argparse or absl) or an unknown or mistyped ``--config.KEY`` override (with a
did-you-mean). It is printed as one line on stderr and the program exits with status 2, before
anything is written. Anything else is a programming error and raises with its traceback.
``--verbose`` or ``EMBEDDINGGEMMA_JAX_DEBUG=1`` prints the traceback of a user mistake too.

argparse mains build their parser with `ArgumentParser` and are wrapped with `command`::

    @cli.command
    def main(argv=None) -> int:
        args = cli.ArgumentParser(prog="python -m embeddinggemma_jax.x").parse_args(argv)
        ...

    if __name__ == "__main__":
        sys.exit(main())

absl mains (ml_collections config flags included) start through `run_absl` instead of
``app.run``::

    if __name__ == "__main__":
        cli.run_absl(main)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from embeddinggemma_jax.errors import LocatedError, UserError, did_you_mean

DEBUG_ENV = "EMBEDDINGGEMMA_JAX_DEBUG"
EXIT_USER_ERROR = 2
# OSErrors that name the user's path; other OSErrors (no space left, ...) keep their traceback.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _debug(argv: Sequence[str] | None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--verbose" in argv


def message(error: BaseException) -> str | None:
    """The one-line ``where: what`` of a user mistake, or None when `error` is not one."""
    if isinstance(error, UserError):
        text = str(error)
    elif isinstance(error, _PATH_ERRORS):
        text = f"{error.filename}: {error.strerror}" if error.filename else str(error)
    else:
        return None
    return " ".join(text.split()) if "\n" in text else text  # one line, always


def fail(error: BaseException, argv: Sequence[str] | None = None) -> NoReturn:
    """Prints `error` (a user mistake) as one line, the traceback first when debugging; exits 2."""
    if _debug(argv):
        traceback.print_exception(error)
    print(f"error: {message(error) or error}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def command(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a ``main(argv=None)``: user mistakes become one line and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None, *args, **kwargs):
        try:
            return main(argv, *args, **kwargs)
        except Exception as e:
            if message(e) is None:
                raise
            fail(e, argv)

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a ``--verbose`` flag, whose mistakes raise `LocatedError` (where = the flag)
    instead of printing the usage: `command` turns them into the one-line error."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--verbose", action="store_true", help="on an error, also show its traceback"
        )

    def error(self, message: str) -> NoReturn:
        # argparse words flag errors "argument --dim: invalid int value: 'x'".
        match = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
        if match:
            raise LocatedError(match.group(2), where=match.group(1))
        raise UserError(message)


# ---------------------------------------------------------------------------------------------
# absl + ml_collections


def load_config(spec: str) -> Any:
    """``get_config(variant)`` of a config file named ``path.py[:variant]`` (as ``--config=``
    takes it); LocatedError (where ``--config``) when the file is missing or the variant is
    refused."""
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise LocatedError(f"no such config file: {path}", where="--config")
    module_spec = importlib.util.spec_from_file_location("_embeddinggemma_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise LocatedError(f"{path} defines no get_config()", where="--config")
    try:
        return module.get_config(variant or None)
    except (ValueError, KeyError) as e:  # the configs refuse an unknown variant this way
        raise LocatedError(str(e.args[0] if e.args else e), where=f"--config={spec}") from e


def config_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a ConfigDict, inner nodes included (``["data", "data.seed", ...]``)."""
    import ml_collections

    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(config_keys(value, f"{prefix}{key}."))
    return keys


def check_override(config: Any, key: str, flag: str = "--config") -> None:
    """LocatedError (where ``--config.KEY``, with a did-you-mean) unless `key` names an entry."""
    from ml_collections.config_flags import config_path

    try:
        config_path.get_value(key, config)
        return
    except (KeyError, AttributeError, IndexError, ValueError):
        pass
    keys = config_keys(config)
    # The first part that is not a key, matched among its siblings (init.path -> init_from);
    # failing that, the whole key among all keys.
    hint, parts = "", key.split(".")
    for depth in range(1, len(parts) + 1):
        if ".".join(parts[:depth]) not in keys:
            parent = ".".join(parts[: depth - 1])
            siblings = [k for k in keys if k.rpartition(".")[0] == parent]
            hint = did_you_mean(".".join(parts[:depth]), siblings, prefix=f"{flag}.")
            break
    hint = hint or did_you_mean(key, keys, prefix=f"{flag}.")
    raise LocatedError(f"no such config key{hint}", where=f"{flag}.{key}")


def _flag_values(argv: Sequence[str], name: str) -> Iterable[str]:
    """The values given to ``--name=V`` / ``--name V`` in `argv`."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            yield arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            yield argv[i + 1]


def check_config_flags(argv: Sequence[str]) -> None:
    """Loads each ml_collections config-file flag's file and checks every ``--NAME.KEY``
    override in `argv` names an existing key, before absl parses anything."""
    from absl import flags
    from ml_collections.config_flags import config_flags

    for name, flag in flags.FLAGS._flags().items():
        if not config_flags.is_config_flag(flag) or "." in name:
            continue
        specs = list(_flag_values(argv, name))
        if specs:
            config = load_config(specs[-1])
        else:  # a config-dict flag, or a config-file flag left to its default
            try:
                config = flag.value
            except Exception:  # absl reports a missing required flag itself
                continue
        if not hasattr(config, "items"):
            continue
        for arg in argv:
            if arg.startswith(f"--{name}."):
                check_override(config, arg[len(name) + 3 :].split("=", 1)[0], f"--{name}")


def define_config_dict(name: str, config: Any, argv: Sequence[str] | None = None) -> Any:
    """``config_flags.DEFINE_config_dict(name, config)``, after checking the ``--NAME.KEY``
    overrides in `argv` (default ``sys.argv``): ml_collections applies them while defining the
    flag, so a mistyped key would otherwise fail there with a traceback."""
    from ml_collections import config_flags

    argv = sys.argv[1:] if argv is None else argv
    try:
        for arg in argv:
            if arg.startswith(f"--{name}."):
                check_override(config, arg[len(name) + 3 :].split("=", 1)[0], f"--{name}")
    except LocatedError as e:
        fail(e, argv)
    return config_flags.DEFINE_config_dict(name, config)


def _absl_flag_error(error: Exception) -> LocatedError:
    # absl words them "flag --n=abc: invalid literal ..." or "Unknown command line flag 'x'".
    text = " ".join(str(error).split())
    match = re.match(r"flag (--[^=\s:]+)(?:=\S*)?: (.*)", text)
    if match:
        what = match.group(2)
        if "must have a value other than None" in what:
            what = "missing (a required flag)"
        return LocatedError(what, where=match.group(1))
    match = re.match(r"Unknown command line flag '([^']+)'\.?\s*(?:Did you mean: (.*))?", text)
    if match:
        names = [
            f"--{n.strip()}" for n in (match.group(2) or "").strip(" ?").split(",") if n.strip()
        ]
        hint = f" (did you mean {' or '.join(names)}?)" if names else ""
        return LocatedError(f"no such flag{hint}", where=f"--{match.group(1)}")
    return LocatedError(text)


def run_absl(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """``absl.app.run(main)`` with the one-line errors (flags, config overrides, user mistakes
    raised by `main`); defines ``--verbose``."""
    from absl import app, flags

    argv = list(sys.argv if argv is None else argv)
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "on an error, also show its traceback")

    def parse(args: list[str]) -> list[str]:
        try:
            check_config_flags(args[1:])
            return flags.FLAGS(args)
        except flags.Error as e:
            raise _absl_flag_error(e) from e
        except SystemExit as e:  # absl's --help exits 1; asking for help is no error
            if e.code == 1 and set(args[1:]) & {"--help", "-h", "-?", "--helpshort", "--helpfull"}:
                raise SystemExit(0) from None
            raise

    def usage_error(args: list[str]):
        try:
            return main(args)
        except app.UsageError as e:
            raise UserError(str(e)) from e

    try:
        app.run(usage_error, argv=argv, flags_parser=parse)
    except Exception as e:
        if message(e) is None:
            raise
        fail(e, argv[1:])
    raise SystemExit(0)  # app.run exits itself; this is for the type checker
