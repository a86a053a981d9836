"""The archiver: moves finished sessions from Redis to S3/MinIO, verified and idempotent."""
