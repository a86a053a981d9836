"""The HTTP gateway: authenticates, validates and relays chats between clients and the broker."""
