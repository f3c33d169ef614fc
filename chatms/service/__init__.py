"""Use cases: a turn of a chat, history, ending a chat; written against the ports in `ports`."""
