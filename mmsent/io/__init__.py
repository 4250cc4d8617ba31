"""Reading images and dumps: local paths, file://, http(s):// and s3:// (any S3-compatible store)."""
