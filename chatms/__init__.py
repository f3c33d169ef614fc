"""chatms: a chat microservice relaying OpenAI streams to gRPC, HTTP and WhatsApp clients."""

__version__ = "0.1.0"
