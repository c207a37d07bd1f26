"""The ``rnnparity`` command line."""
