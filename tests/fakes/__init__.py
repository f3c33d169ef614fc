"""Loopback stand-ins for the outside systems this machine cannot reach (OpenAI, Twilio)."""
