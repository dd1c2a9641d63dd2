"""The one base class for errors a user can act on: shown as one line, never a traceback."""


class DllmError(Exception):
    pass
