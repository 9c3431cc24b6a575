"""The one error type lmviz raises for anything a user did or gave it."""


class LmvizError(ValueError):
    """A problem with the user's input, file or choice, worded for a student to read.

    Every public function in ``lmviz`` that takes user input either answers correctly or
    raises this; the app shows ``str(err)`` in an error box, never a traceback.
    """
