"""Code every service imports: settings loading, logging, the Redis keyspace and session store."""
