"""Real certificate verifiers, each asked whether a client accepts a served chain (see ``verify``)."""
