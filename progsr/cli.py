"""`progsr` command line: each subcommand lives in its own module and is imported only when used."""

from __future__ import annotations

import importlib
import sys

from progsr.errors import UserError

# subcommand -> (module, one-line help). Each module exposes main(argv: list[str]) -> int.
COMMANDS = {
    "upscale": ("progsr.upscale", "upscale images, folders or globs"),
    "bench": ("progsr.evaluation", "PSNR/SSIM/LPIPS benchmark under the standard SR protocol"),
    "train": ("progsr.train", "train a generator (psnr or gan phase), resumable"),
    "export": ("progsr.export", "export a checkpoint's EMA generator to .safetensors, or a generator to ONNX"),
    "app": ("progsr.webapp", "start the Gradio web app"),
}


def _usage() -> str:
    lines = ["usage: progsr COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'progsr COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`progsr COMMAND ...`; output piped into a reader that stops early (`| head`) ends quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141  # 128 + SIGPIPE, as a shell reports it


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from progsr import __version__

        print(f"progsr {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"progsr: error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run(module.main, rest, f"progsr {name}")


def run(main_fn, argv: list[str] | None, prog: str) -> int:
    """Call a command's main(argv), turning a UserError into one line on stderr (exit 2) and Ctrl-C into exit 130."""
    try:
        return int(main_fn(argv) or 0)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
