"""The messaging contract: topology names, message structs and the machine-readable contract."""
