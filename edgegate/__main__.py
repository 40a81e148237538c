"""``python -m edgegate``: the same CLI as the ``edgegate`` command."""

from edgegate.cli.main import main

if __name__ == "__main__":
    main()
