"""The package version, in a module of its own so that modules that record it
(``io`` writes it into every file) need not import the package."""
__version__ = "0.1.0"
