"""The ``edgegate`` command line."""
