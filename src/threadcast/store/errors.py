"""What the store refuses; the API answers them 404 and 409."""


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass
