"""The one error type users can cause. The CLI turns it into a single line and a non-zero exit."""


class HybridError(Exception):
    """A problem with the user's input (bad path, unknown model, bad recipe key...), with a message that says what to do."""
