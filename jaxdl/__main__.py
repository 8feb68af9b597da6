"""`python -m jaxdl`: the `jaxdl` command."""

from jaxdl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
