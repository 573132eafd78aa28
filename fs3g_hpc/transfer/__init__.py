"""The only package that imports boto3/botocore: clients, and (later) uploads, downloads and restore requests."""
