"""Sub-commands of ``lesionseg``, one module each (discovered by :mod:`lesionseg.cli.main`)."""
