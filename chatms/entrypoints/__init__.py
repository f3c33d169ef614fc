"""The doors: thin translation between a wire protocol and the use cases."""
