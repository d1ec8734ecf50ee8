"""Errors the suite raises for bad user input, so command-line tools can print one clear line."""


class DataError(ValueError):
    """A data set, image, mask or table a user gave is unreadable or inconsistent; the message names it."""
