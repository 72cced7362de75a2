"""The ``dscnet`` command line."""
