"""The one error type the converter raises for bad inputs: its message is shown to the user."""


class ConversionError(Exception):
    """A checkpoint that cannot be converted; the message names the file and tensor involved."""
